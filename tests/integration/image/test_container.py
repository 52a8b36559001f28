"""The container image, built with buildah from the Dockerfile and run in front of the real
stack: authenticated calls through it, non-root, nothing written outside the audit volume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from devstack import LocalStack
from procs import free_port, start, wait_http

from tests.integration.image.buildah import (
    build_image,
    buildah,
    chown_tree,
    ensure_base_image,
)
from tests.integration.support import bearer

UID = 10001
# The only places the image's user may write: temp dirs (read-only too on Kubernetes with
# readOnlyRootFilesystem unless an emptyDir is mounted) and the audit volume.
WRITABLE_ALLOWED = {"/tmp", "/var/tmp",  # noqa: S108  (paths inside the image, not ours)
                    "/var/lock", "/run/lock", "/var/log/orchgate"}
RUNTIME_DIRS = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log/orchgate")


def _container_config(stack: LocalStack, port: int) -> str:
    return f"""\
listen: {{host: 127.0.0.1, port: {port}}}
issuers:
  - issuer: {stack.issuer}
    audiences: [orchgate]
    algorithms: [RS256]
    groups_claim: groups
upstreams:
  airflow:
    url: {stack.airflow.url}
    prefix: /airflow
    credential:
      mode: jwt-hs512
      signing_secret_file: /run/secrets/airflow-jwt-secret
  prefect:
    url: {stack.prefect.url}
    prefix: /prefect
    credential:
      auth_string_file: /run/secrets/prefect-auth-string
policy:
  model: /etc/orchgate/policies/model.conf
  files: [/etc/orchgate/policies/policy.csv]
  watch: true
audit:
  file: /var/log/orchgate/audit.jsonl
  stdout: false
"""


def _processes_of_group(pgid: int) -> dict[int, tuple[int, str]]:
    """pid → (real uid, command line) of every process in a process group."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            uid = next(int(line.split()[1]) for line in
                       Path(f"/proc/{entry}/status").read_text().splitlines()
                       if line.startswith("Uid:"))
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, StopIteration):
            continue
        found[int(entry)] = (uid, cmd)
    return found


def _changed_files(rootfs: Path, since: float) -> list[str]:
    changed = []
    skip = {rootfs / d for d in RUNTIME_DIRS}
    for root, dirs, files in os.walk(rootfs):
        dirs[:] = [d for d in dirs if Path(root, d) not in skip]
        for name in files:
            path = Path(root, name)
            try:
                if path.lstat().st_mtime > since:
                    changed.append("/" + str(path.relative_to(rootfs)))
            except OSError:
                continue
    return changed


@pytest.mark.timeout(1200)
def test_image_runs_non_root_read_only_and_proxies_to_the_stack(
        stack: LocalStack, tokens: dict[str, str], tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    base, base_built_now = ensure_base_image(tmp_path)
    build = build_image(base)
    summary = {"base": base, "base_built_now": base_built_now,
               "build_seconds": round(build.seconds, 1), "image_size": build.size}
    record_property("image", json.dumps(summary))
    print(f"\nimage: {summary}")  # shown with -s; also in the junit properties

    # The image's files belong to root: its user can write only temp dirs and the volume.
    container = buildah("from", "--pull-never", build.image).stdout.strip()
    try:
        probe = buildah(
            "run", "--isolation", "chroot", "--network", "host", container, "--",
            "python3", "-c",
            "import os, json\n"
            "w = []\n"
            "for r, ds, fs in os.walk('/'):\n"
            "    if r.startswith(('/proc', '/sys', '/dev')):\n"
            "        ds[:] = []; continue\n"
            "    w += [os.path.join(r, n) for n in ds + fs\n"
            "          if not os.path.islink(os.path.join(r, n))\n"
            "          and os.access(os.path.join(r, n), os.W_OK)]\n"
            "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'writable': w}))",
            timeout=120).stdout
        facts = json.loads(probe.strip().splitlines()[-1])
        assert facts["uid"] == UID and facts["gid"] == UID
        writable = set(facts["writable"])
        assert writable <= WRITABLE_ALLOWED | {p for p in writable
                                               if p.startswith(("/proc", "/sys", "/dev"))}, \
            sorted(writable - WRITABLE_ALLOWED)

        # Configuration and secrets mounted read-only, the audit volume writable by the user.
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        for name in ("airflow-jwt-secret", "prefect-auth-string"):
            shutil.copy(stack.workdir / "secrets" / name, secrets_dir / name)
            (secrets_dir / name).chmod(0o400)
        chown_tree(secrets_dir, UID)
        audit_dir = tmp_path / "audit"
        audit_dir.mkdir()
        chown_tree(audit_dir, UID)
        port = free_port()
        config = tmp_path / "orchgate.yaml"
        config.write_text(_container_config(stack, port), encoding="utf-8")
        config.chmod(0o444)

        started = time.time()
        proc = start("orchgate-container", [
            "buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot",
            "--network", "host",
            "--volume", f"{audit_dir}:/var/log/orchgate",
            "--volume", f"{config}:/etc/orchgate/orchgate.yaml:ro",
            "--volume", f"{secrets_dir}:/run/secrets:ro",
            container, "--", "orchgate", "serve", "--config", "/etc/orchgate/orchgate.yaml",
        ], None, None, tmp_path / "container.log")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/_orchgate/readyz", 90, proc=proc)
            serving = [(uid, cmd) for uid, cmd in _processes_of_group(proc.pgid).values()
                       if "orchgate" in cmd and "serve" in cmd and "buildah" not in cmd]
            assert serving and all(uid == UID for uid, _ in serving), serving

            with httpx2.Client(base_url=url, timeout=60) as client:
                dags = client.get("/airflow/api/v2/dags", headers=bearer(tokens["alice"]))
                assert dags.status_code == 200, dags.text
                assert sorted(d["dag_id"] for d in dags.json()["dags"]) == [
                    "shared_housekeeping", "team_a_etl", "team_a_reporting"]
                deployments = client.post("/prefect/api/deployments/filter", json={},
                                          headers=bearer(tokens["alice"]))
                assert deployments.status_code == 200, deployments.text
                assert sorted(d["name"] for d in deployments.json()) == ["daily", "nightly"]
                denied = client.get("/prefect/api/deployments/name/team-b-ingest/hourly",
                                    headers=bearer(tokens["amy"]))
                assert denied.status_code == 403
                assert client.get("/airflow/api/v2/dags").status_code == 401
                health = buildah("run", "--isolation", "chroot", "--network", "host",
                                 container, "--", "python3", "-c",
                                 "import urllib.request; print(urllib.request.urlopen("
                                 f"'{url}/_orchgate/livez', timeout=4).status)",
                                 timeout=60).stdout
                assert health.strip().endswith("200")
                request_ids = {dags.headers["x-request-id"], denied.headers["x-request-id"]}
            # SIGTERM to orchgate itself, as a container runtime's stop does (buildah run
            # answers a SIGTERM of its own by killing the container's process).
            for pid, _ in [(p, c) for p, (_, c) in _processes_of_group(proc.pgid).items()
                           if "orchgate" in c and "serve" in c and "buildah" not in c]:
                os.kill(pid, signal.SIGTERM)
            # uvicorn re-raises SIGTERM after its graceful shutdown, which buildah reports as
            # "exited on terminated" (not "killed"): the drain ran to its end.
            proc.popen.wait(40)
            assert "exited on terminated" in proc.tail(), proc.tail()
        finally:
            proc.stop(timeout=10)

        lines = (audit_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        trail = [json.loads(line) for line in lines]  # every line whole after the stop
        records = [r for r in trail if r.get("event") == "request"]
        assert request_ids <= {r["request_id"] for r in records}
        assert {(r["principal"] or {}).get("sub") for r in records} >= {"alice", "amy"}

        # Nothing but the audit volume was written: the root filesystem could be read-only.
        rootfs = Path(buildah("mount", container).stdout.strip())
        # (buildah itself creates the empty mount point of the configuration file.)
        changed = [p for p in _changed_files(rootfs, started) if p != "/etc/orchgate/orchgate.yaml"]
        assert changed == []
    finally:
        buildah("rm", container, check=False)
