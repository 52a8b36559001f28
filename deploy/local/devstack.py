"""The local stack: dev identity provider, Airflow, Prefect and orchgate with example policies.

Used by `make demo` (deploy/local/demo.py) and by the integration tests' fixtures, so both
run exactly the same thing. Every secret (IdP client secrets, Airflow's signing secret,
Prefect's auth string, the IdP's signing key) is generated here at start-up into the stack's
work directory (mode 0600); none is in the repository.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import Proc, Stack, free_port, wait_http
from upstreams import (
    AirflowHandle,
    PrefectHandle,
    register_prefect_examples,
    start_airflow,
    start_prefect,
    start_prefect_worker,
)

from proxy.audit.chain import generate_key

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "orchgate"

# Personas: two teams, a platform admin, a user in no group, two service accounts.
USERS = {
    "alice": ["team-a-deployers"],
    "amy": ["team-a-readers"],
    "bob": ["team-b-operators"],
    "carol": ["platform-admins"],
    "dave": [],
}
SERVICES = ["ci-team-a", "agent-team-b"]
HUMAN_CLIENT = "orchgate-cli"


@dataclass
class LocalStack:
    workdir: Path
    issuer: str
    airflow: AirflowHandle
    prefect: PrefectHandle
    orchgate_url: str
    orchgate: Proc
    config: Path
    audit_file: Path
    stack_file: Path
    deployments: dict[str, str]
    client_secrets: dict[str, str] = field(repr=False)

    def token(self, persona: str) -> str:
        """An access token for a persona, from the real identity provider."""
        from idp_client import service_token, user_token

        if persona in SERVICES:
            return service_token(self.issuer, persona, self.client_secrets[persona])
        return user_token(self.issuer, HUMAN_CLIENT, self.client_secrets[HUMAN_CLIENT], persona)

    def audit_records(self) -> list[dict[str, object]]:
        """Each request's audit record (not the write-ahead intents, checkpoints, starts)."""
        return [r for r in self.audit_trail() if r.get("event") == "request"]

    def audit_record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The audit record of one request. It reaches the file within 5 ms of the answer
        (proxy/audit/sinks.py): a moment after the caller may have it, so it is waited for
        (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = [r for r in self.audit_records() if r.get("request_id") == request_id]
            except ValueError:  # a last line caught half-written: read again
                found = []
            if found or time.monotonic() >= deadline:
                if len(found) != 1:
                    raise AssertionError(f"expected one audit record for {request_id}, "
                                         f"found {len(found)}")
                return found[0]
            time.sleep(0.02)

    def audit_trail(self) -> list[dict[str, object]]:
        # One record a line, split on "\n" only: str.splitlines() also splits on U+2028,
        # U+0085 and the like, which JSON leaves unescaped inside a string (a hostile path).
        lines = self.audit_file.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines if line.strip()]


def _secret_file(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    return path


def _start_idp(stack: Stack, workdir: Path, client_secrets: dict[str, str]) -> str:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "host": "127.0.0.1",
        "port": port,
        "issuer": issuer,
        "audience": AUDIENCE,
        "access_token_ttl": 3600,
        "clients": [
            {
                "client_id": HUMAN_CLIENT,
                "client_secret": client_secrets[HUMAN_CLIENT],
                "kind": "human-login",
            }
        ]
        + [
            {"client_id": s, "client_secret": client_secrets[s], "kind": "service"}
            for s in SERVICES
        ],
        "users": [
            {"sub": u, "email": f"{u}@example.test", "name": u.title(), "groups": g}
            for u, g in USERS.items()
        ],
        "keys_file": str(workdir / "secrets" / "idp-jwks.json"),
    }
    config_file = _secret_file(workdir / "secrets" / "idp.json", json.dumps(config, indent=2))
    proc = stack.start(
        "dev-idp",
        ["node", str(ROOT / "deploy/dev-idp/server.mjs"), "--config", str(config_file)],
        None,
        ROOT,
        workdir / "logs" / "dev-idp.log",
    )
    wait_http(issuer + "/.well-known/openid-configuration", 30, proc=proc)
    return issuer


def _orchgate_config(
    workdir: Path, issuer: str, airflow_url: str, prefect_url: str, port: int
) -> Path:
    config = f"""\
# Generated by deploy/local/devstack.py for the local stack.
listen:
  host: 127.0.0.1
  port: {port}
issuers:
  - issuer: {issuer}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    groups_claim: groups
upstreams:
  airflow:
    url: {airflow_url}
    prefix: /airflow
    credential:
      mode: jwt-hs512
      signing_secret_file: secrets/airflow-jwt-secret
      lifetime_seconds: 120
  prefect:
    url: {prefect_url}
    prefix: /prefect
    credential:
      auth_string_file: secrets/prefect-auth-string
policy:
  model: {ROOT / "policies/model.conf"}
  files: [{ROOT / "policies/policy.csv"}]
audit:
  file: audit/audit.jsonl
  stdout: false
  checkpoint_key_file: secrets/audit-checkpoint.key
"""
    (workdir / "audit").mkdir(parents=True, exist_ok=True)
    key = workdir / "secrets" / "audit-checkpoint.key"
    if not key.exists():  # signs the audit trail's checkpoints (orchgate audit verify)
        generate_key(key)
    path = workdir / "orchgate.yaml"
    path.write_text(config, encoding="utf-8")
    return path


@contextmanager
def local_stack(workdir: Path, orchgate_port: int | None = None,
                worker: bool = False) -> Iterator[LocalStack]:
    """Start everything, yield it, stop everything (in reverse order, also on failure).

    `worker`: also start a Prefect process worker for the example deployments' pool (it talks
    to the Prefect server directly, as the platform's own infrastructure).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    client_secrets = {c: secrets.token_urlsafe(24) for c in [HUMAN_CLIENT, *SERVICES]}
    airflow_secret = secrets.token_urlsafe(48)
    prefect_auth = f"orchgate:{secrets.token_urlsafe(24)}"
    _secret_file(workdir / "secrets" / "airflow-jwt-secret", airflow_secret)
    _secret_file(workdir / "secrets" / "prefect-auth-string", prefect_auth)
    with Stack() as stack:
        issuer = _start_idp(stack, workdir, client_secrets)
        airflow = start_airflow(workdir / "airflow", airflow_secret, ROOT / "deploy/local/dags")
        stack.callback(airflow.stop)
        prefect = start_prefect(workdir / "prefect", prefect_auth)
        stack.callback(prefect.stop)
        deployments = register_prefect_examples(prefect)
        if worker:
            stack.add(start_prefect_worker(prefect))
        port = orchgate_port or free_port()
        config = _orchgate_config(workdir, issuer, airflow.url, prefect.url, port)
        orchgate = stack.start(
            "orchgate",
            [str(ROOT / ".venv/bin/orchgate"), "serve", "--config", str(config)],
            None,
            ROOT,
            workdir / "logs" / "orchgate.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_orchgate/readyz", 60, proc=orchgate)
        stack_file = _secret_file(
            workdir / "secrets" / "stack.json",
            json.dumps(
                {
                    "issuer": issuer,
                    "clients": client_secrets,
                    "personas": {
                        **{u: {"kind": "user", "client": HUMAN_CLIENT} for u in USERS},
                        **{s: {"kind": "service", "client": s} for s in SERVICES},
                    },
                    "orchgate": url,
                },
                indent=2,
            ),
        )
        yield LocalStack(
            workdir=workdir,
            issuer=issuer,
            airflow=airflow,
            prefect=prefect,
            orchgate_url=url,
            orchgate=orchgate,
            config=config,
            audit_file=workdir / "audit" / "audit.jsonl",
            stack_file=stack_file,
            deployments=deployments,
            client_secrets=client_secrets,
        )


__all__ = ["SERVICES", "USERS", "LocalStack", "local_stack"]
