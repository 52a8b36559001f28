"""Throughput and latency through orchgate vs direct, on loopback. `make bench`.

An nginx (Debian's `nginx-light`) serves a 1 KB JSON body as the upstream and also the JWKS
of an RSA key generated here; orchgate runs its full pipeline in front of it (RS256 token
verification with the verified-token cache, catalog, decision, per-caller Airflow credential,
streaming forward, audit record to a file). wrk drives each target for a bounded time.

Results: printed, and written to benchmarks/results/<UTC date>-proxy.json.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
PATH = "/api/v2/dags/team_a_etl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def synthetic_rows(count: int) -> str:
    """Permission rows for other teams' workflows: they never match the benchmark's request,
    so they cost only what an index pays for a large policy."""
    return "".join(f"p, group:g{i % 200}, airflow, team:t{i % 50}, read, allow\n"
                   for i in range(count))


class Reloading:
    """Rewrite the policy every 0.5 s (a new comment line: a new digest, a real reload)."""

    def __init__(self, policy: Path, enabled: bool) -> None:
        self.policy, self.enabled = policy, enabled
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.count = 0

    def run(self) -> None:
        base = self.policy.read_text()
        while not self.stop.wait(0.5):
            self.count += 1
            self.policy.write_text(base + f"# reload {self.count}\n")

    def __enter__(self) -> Reloading:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.enabled:
            self.thread.join(5)
            self.policy.write_text(self.policy.read_text().split("# reload")[0])


def b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def nginx_conf(root: Path, port: int) -> str:
    return f"""
daemon off; master_process off; worker_processes 1; pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; default_type application/json;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port}; root {root};
    location = /.well-known/openid-configuration {{ alias {root}/discovery.json; }}
    location = /jwks.json {{ alias {root}/jwks.json; }}
    location / {{ try_files /body.json =404; }}
  }}
}}
"""


def wrk(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_second": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]),
            "non_2xx": float(errors.group(1)) if errors else 0.0}


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--policy-rows", type=int, default=10000,
                        help="synthetic permission rows added to the example policy")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk nginx-light)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="orchgate-bench-") as tmp:
        root = Path(tmp)
        (root / "tmp").mkdir()
        up_port, proxy_port, quiet_port = free_port(), free_port(), free_port()
        issuer = f"http://127.0.0.1:{up_port}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = key.public_key().public_numbers()
        (root / "jwks.json").write_text(json.dumps({"keys": [
            {"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
             "n": b64(pub.n), "e": b64(pub.e)}]}))
        (root / "discovery.json").write_text(json.dumps(
            {"issuer": issuer, "jwks_uri": issuer + "/jwks.json"}))
        item = {"dag_id": "team_a_etl", "description": "x" * 900, "is_paused": False}
        (root / "body.json").write_text(json.dumps(item))
        (root / "nginx.conf").write_text(nginx_conf(root, up_port))
        (root / "airflow-secret").write_text(secrets.token_urlsafe(48))
        common = f"""
issuers: [{{issuer: "{issuer}", audiences: [orchgate], algorithms: [RS256]}}]
upstreams:
  airflow:
    url: {issuer}
    credential: {{mode: jwt-hs512, signing_secret_file: airflow-secret}}
policy: {{model: {ROOT}/policies/model.conf, files: [policy.csv]}}
"""
        (root / "orchgate.yaml").write_text(
            f"listen: {{host: 127.0.0.1, port: {proxy_port}}}\n{common}"
            "audit: {file: audit.jsonl, stdout: false}\n")
        # The same proxy without its audit trail: what the trail costs (docs/audit.md).
        (root / "orchgate-audit-off.yaml").write_text(
            f"listen: {{host: 127.0.0.1, port: {quiet_port}}}\n{common}"
            "audit: {enabled: false}\n")
        policy = root / "policy.csv"
        policy.write_text((ROOT / "policies/policy.csv").read_text() + synthetic_rows(
            args.policy_rows))
        now = int(time.time())
        token = jwt.encode({"iss": issuer, "aud": "orchgate", "sub": "alice",
                            "groups": ["team-a-deployers"], "iat": now, "exp": now + 3600},
                           key, algorithm="RS256", headers={"kid": "bench"})
        procs = [subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf")],
                                  start_new_session=True)]
        try:
            wait_port(up_port)
            for config, port in (("orchgate.yaml", proxy_port),
                                 ("orchgate-audit-off.yaml", quiet_port)):
                procs.append(subprocess.Popen(
                    [str(ROOT / ".venv/bin/orchgate"), "serve", "--config",
                     str(root / config)], start_new_session=True,
                    stdout=subprocess.DEVNULL, env={**os.environ}))
                wait_port(port)
            proxied = f"http://127.0.0.1:{proxy_port}/airflow{PATH}"
            targets = {"direct": f"{issuer}{PATH}", "orchgate": proxied,
                       "orchgate_audit_off": f"http://127.0.0.1:{quiet_port}/airflow{PATH}",
                       "orchgate_reloading": proxied}
            results: dict[str, dict[str, dict[str, float]]] = {}
            for c in args.connections:
                for name, url in targets.items():
                    wrk(url, token, c, 2)  # warm-up (keys, caches, pools)
                    with Reloading(policy, enabled=name == "orchgate_reloading"):
                        results.setdefault(f"c{c}", {})[name] = wrk(url, token, c,
                                                                     args.seconds)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=10)
        audit_lines = sum(1 for _ in (root / "audit.jsonl").open())
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "make bench",
        "audit_records_written": audit_lines,
        "policy_rows": args.policy_rows + 9,
        "results": results,
    }
    for level, runs in results.items():
        direct = runs["direct"]["requests_per_second"]
        for name, r in runs.items():
            print(f"{level:>4} {name:<19} {r['requests_per_second']:>9.0f} req/s  "
                  f"p50 {r['p50']:>7} ms  p99 {r['p99']:>7} ms  non-2xx {r['non_2xx']:.0f}  "
                  f"({r['requests_per_second'] / direct:.1%} of direct)")
    out = ROOT / "benchmarks/results" / f"{date[:10]}-proxy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
