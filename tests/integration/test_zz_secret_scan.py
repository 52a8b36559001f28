"""Runs last (the name orders it): every file the integration run wrote — the stack's logs,
the audit trail, the upstreams' state — and the output pytest captured from every test so far
are searched for every secret the run used. Zero hits."""

from __future__ import annotations

from pathlib import Path

from devstack import LocalStack

from tests.integration.support import CAPTURED

MAX_BYTES = 200 * 1024 * 1024


def secrets_of(stack: LocalStack, tokens: dict[str, str]) -> dict[str, str]:
    found = {f"client secret of {c}": s for c, s in stack.client_secrets.items()}
    for name in ("airflow-jwt-secret", "prefect-auth-string"):
        found[name] = (stack.workdir / "secrets" / name).read_text(encoding="utf-8").strip()
    found["prefect auth password"] = found["prefect-auth-string"].split(":", 1)[1]
    found.update({f"token of {p}": t for p, t in tokens.items()})
    # A JWT's signature alone identifies it (a log may cut the header off).
    found.update({f"signature of {p}'s token": t.rsplit(".", 1)[1] for p, t in tokens.items()})
    assert all(len(v) >= 16 for v in found.values()), "a secret too short to search for"
    return found


def test_no_secret_is_in_any_file_the_run_wrote_or_any_captured_output(
        stack: LocalStack, tokens: dict[str, str]) -> None:
    secrets = {name: value.encode() for name, value in secrets_of(stack, tokens).items()}
    scanned: list[Path] = []
    hits: list[str] = []
    for path in sorted(stack.workdir.rglob("*")):
        if not path.is_file() or path.parent == stack.workdir / "secrets":
            continue  # where the secrets are kept, by design (mode 0600)
        if path.stat().st_size > MAX_BYTES:
            hits.append(f"{path}: too large to scan")
            continue
        data = path.read_bytes()
        scanned.append(path)
        hits += [f"{path.relative_to(stack.workdir)}: {name}"
                 for name, value in secrets.items() if value in data]
    captured = "\n".join(CAPTURED).encode()
    hits += [f"pytest captured output: {name}" for name, value in secrets.items()
             if value in captured]

    assert stack.audit_file in scanned and any(p.parent.name == "logs" for p in scanned)
    assert CAPTURED, "no test output was collected"
    assert hits == []
