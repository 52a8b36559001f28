"""The servers a benchmark runs, all on loopback with free ports, each stopped by its pid.

nginx (Debian's `nginx-light`) is the fast upstream: a 1 KB JSON body, the identity
provider's discovery document and JWKS, and a 1,000-DAG `GET /api/v2/dags` list served in
Airflow's pages. HAProxy 2.6 is the native peer: it verifies the same RS256 token with
`jwt_verify` (signature, `iss`, `aud`, `exp`) and forwards to the same nginx. orchgate runs its
full pipeline in front of nginx (Airflow) and of a small Prefect socket server
(benchmarks/prefect_upstream.py).

The servers under test (orchgate, and the bare forwarders of benchmarks/machinery.py) run from
`RUNTIME`, a virtualenv on the interpreter of orchgate's image (`make bench` makes it from
Debian's python3 and passes it as ORCHGATE_BENCH_RUNTIME); without one, from the checkout's.

A `Server` knows its processes (every process of the session it was started in: uvicorn's
supervisor and workers) and reads their CPU time and RSS from /proc.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / (os.environ.get("ORCHGATE_BENCH_RUNTIME") or ".venv") / "bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
ITEM_PATH = "/api/v2/dags/team_a_etl"
LIST_PATH = "/api/v2/dags"
LIST_ITEMS = 1000
AIRFLOW_PAGE = 100  # orchgate reads Airflow lists in pages of its `maximum_page_limit`
SOCKET_PATH = "/api/events/in"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if path is None:
        sys.exit(f"{name} is not installed (Debian: apt-get install wrk nginx-light haproxy)")
    return path


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float  # utime + stime of every process of the server
    rss_mb: tuple[float, ...]  # per process, largest first


@dataclass(slots=True)
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The processes of the session the server was started in (start_new_session)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields and int(fields[3]) == self.proc.pid:  # field 6: session id
                    pids.append(int(entry.name))
        return pids

    def usage(self) -> Usage:
        cpu, rss = 0, []
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields:
                cpu += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
                rss.append(int(fields[21]) * PAGE_SIZE / 2**20)  # field 24: rss in pages
        return Usage(cpu / CLOCK_TICKS, tuple(sorted(rss, reverse=True)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session, nothing else
                self.proc.wait(timeout=5)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on: the name in field 2 may hold spaces."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


# `orchgate_audit_on` and `orchgate_audit_off` serve only the audit comparison: the same
# history, one with the trail and one without (`orchgate` also serves every other benchmark).
ORCHGATES = ("orchgate", "orchgate_2w", "orchgate_audit_on", "orchgate_audit_off")


@dataclass(slots=True)
class Stack:
    """Files, ports and processes of one benchmark run, under a temporary directory."""

    root: Path
    policy_rows: int
    ports: dict[str, int] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    token: str = ""
    refused_tokens: dict[str, str] = field(default_factory=dict)  # what both must answer 401
    prefect_auth: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    list_sizes: tuple[int, ...] = ()  # more DAG lists, served under /n<size>/ (besides 1,000)
    claims: dict[str, object] = field(default_factory=dict)  # the benchmark token's
    signing_key: rsa.RSAPrivateKey | None = None  # the issuer's, generated for the run

    def __post_init__(self) -> None:
        for name in ("nginx", "prefect", "haproxy", "haproxy_2t", *ORCHGATES):
            self.ports[name] = free_port()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.ports['nginx']}"

    def policy(self, orchgate: str) -> Path:
        """Each orchgate has its own policy file: editing one reloads only that one (on 2
        cores, the others' rebuilds would be counted against it)."""
        return self.root / f"{orchgate}-policy.csv"

    def url(self, server: str, path: str) -> str:
        prefix = "/airflow" if server.startswith("orchgate") else ""
        return f"http://127.0.0.1:{self.ports[server]}{prefix}{path}"

    # -- files -------------------------------------------------------------------------------

    def write_files(self) -> None:
        root = self.root
        (root / "tmp").mkdir()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = key.public_key()
        numbers = pub.public_numbers()
        (root / "jwks.json").write_text(json.dumps({"keys": [
            {"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
             "n": _b64(numbers.n), "e": _b64(numbers.e)}]}))
        (root / "jwt-public.pem").write_bytes(pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (root / "discovery.json").write_text(json.dumps(
            {"issuer": self.issuer, "jwks_uri": self.issuer + "/jwks.json"}))
        item = {"dag_id": "team_a_etl", "description": "x" * 900, "is_paused": False}
        (root / "body.json").write_text(json.dumps(item))
        write_dag_pages(root / "dags")
        for size in self.list_sizes:
            write_dag_pages(root / f"dags-{size}", size)
        (root / "nginx.conf").write_text(nginx_conf(root, self.ports["nginx"], self.list_sizes))
        (root / "haproxy.cfg").write_text(haproxy_conf(root, self, threads=1))
        (root / "haproxy-2t.cfg").write_text(haproxy_conf(root, self, threads=2))
        (root / "airflow-secret").write_text(secrets.token_urlsafe(48))
        (root / "prefect-auth").write_text(self.prefect_auth)
        policy = (ROOT / "policies/policy.csv").read_text() + synthetic_rows(self.policy_rows)
        for name in ORCHGATES:
            self.policy(name).write_text(policy)
        subprocess.run([str(ROOT / ".venv/bin/orchgate"), "audit", "keygen",
                        str(root / "checkpoint.key")], check=True, stdout=subprocess.DEVNULL)
        for name in ORCHGATES:
            (root / f"{name}.yaml").write_text(orchgate_conf(self, name))
        now = int(time.time())
        self.signing_key = key
        self.claims = {"iss": self.issuer, "aud": "orchgate", "sub": "alice",
                       "groups": ["team-a-deployers"], "iat": now, "exp": now + 3600}
        self.token = self.sign()
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.refused_tokens = {
            "expired": self.sign(iat=now - 7200, exp=now - 3600),
            "wrong audience": self.sign(aud="someone-else"),
            "wrong issuer": self.sign(iss="http://127.0.0.1:1"),
            "another key": jwt.encode(self.claims, other, algorithm="RS256",
                                      headers={"kid": "bench"}),
        }

    def sign(self, **changes: object) -> str:
        """A token from the run's issuer: the benchmark token's claims with `changes`."""
        assert self.signing_key is not None, "write_files() first"
        return jwt.encode({**self.claims, **changes}, self.signing_key, algorithm="RS256",
                          headers={"kid": "bench"})

    # -- processes ---------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Server:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, start_new_session=True, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, cwd=ROOT,
                                env={**os.environ, **env} if env else None)
        server = self.servers[name] = Server(name, self.ports[name], proc)
        wait_port(server.port, proc)
        return server

    def start_all(self) -> None:
        root, orchgate = self.root, str(RUNTIME / "orchgate")
        self.start("nginx", [tool("nginx"), "-p", str(root), "-c", str(root / "nginx.conf")])
        self.start("prefect", [sys.executable, "-m", "benchmarks.prefect_upstream",
                               "--port", str(self.ports["prefect"]),
                               "--auth-file", str(root / "prefect-auth")])
        # -db: stay in the foreground, one process (no master), so its CPU time is its own.
        self.start("haproxy", [tool("haproxy"), "-db", "-f", str(root / "haproxy.cfg")])
        self.start("haproxy_2t", [tool("haproxy"), "-db", "-f", str(root / "haproxy-2t.cfg")])
        for name in ORCHGATES:
            workers = 2 if name == "orchgate_2w" else 1
            self.start(name, [orchgate, "serve", "--config", str(root / f"{name}.yaml"),
                              "--workers", str(workers)])

    def stop_all(self) -> None:
        for server in reversed(self.servers.values()):
            server.stop()

    @contextmanager
    def serving(self) -> Iterator[Stack]:
        """Every server started inside is stopped on the way out; on a failure, the end of
        each one's log is printed first."""
        try:
            yield self
        except BaseException:
            for name in self.servers:
                if tail := self.log_tail(name):
                    print(f"--- {name} log ---\n{tail}", file=sys.stderr)
            raise
        finally:
            self.stop_all()

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) \
            if path.exists() else ""


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def synthetic_rows(count: int) -> str:
    """Permission rows for other teams' workflows: they never match the benchmark's request,
    so they cost only what an index pays for a large policy."""
    return "".join(f"p, group:g{i % 200}, airflow, team:t{i % 50}, read, allow\n"
                   for i in range(count))


def dag(i: int) -> dict[str, object]:
    """One item of Airflow 3's DAGCollectionResponse, about 600 bytes; half the DAGs are
    team A's (visible to the benchmark's caller), a quarter shared (visible), a quarter
    team B's (hidden)."""
    owner = ("team_a", "team_a", "shared", "team_b")[i % 4]
    dag_id = f"{owner}_dag_{i:04d}"
    return {
        "dag_id": dag_id, "dag_display_name": dag_id, "is_paused": i % 7 == 0,
        "is_stale": False, "last_parsed_time": "2026-11-24T10:00:00Z",
        "last_expired": None, "bundle_name": "dags-folder", "bundle_version": None,
        "relative_fileloc": f"{owner}/{dag_id}.py", "fileloc": f"/opt/dags/{owner}/{dag_id}.py",
        "description": f"Nightly load {i} for {owner}", "timetable_summary": "0 2 * * *",
        "timetable_description": "At 02:00", "tags": [{"name": owner, "dag_id": dag_id}],
        "max_active_tasks": 16, "max_active_runs": 1, "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False, "has_import_errors": False,
        "next_dagrun_logical_date": "2026-11-25T02:00:00Z",
        "next_dagrun_data_interval_start": "2026-11-24T02:00:00Z",
        "next_dagrun_data_interval_end": "2026-11-25T02:00:00Z",
        "next_dagrun_run_after": "2026-11-25T02:00:00Z", "owners": [owner],
        "file_token": secrets.token_hex(16),
    }


def write_dag_pages(folder: Path, items: int = LIST_ITEMS) -> None:
    """`all.json`: the whole list in one answer (what a direct caller reads);
    `offset-<n>.json`: the pages orchgate reads with `limit=100&offset=<n>`."""
    folder.mkdir()
    dags = [dag(i) for i in range(items)]
    (folder / "all.json").write_text(json.dumps(
        {"dags": dags, "total_entries": items}))
    for offset in range(0, items + 1, AIRFLOW_PAGE):
        (folder / f"offset-{offset}.json").write_text(json.dumps(
            {"dags": dags[offset:offset + AIRFLOW_PAGE], "total_entries": items}))


def nginx_conf(root: Path, port: int, list_sizes: tuple[int, ...] = ()) -> str:
    # /n<size>/…: an Airflow whose DAG list has <size> items (an upstream URL with that prefix)
    more_lists = "".join(
        f"    location = /n{size}{LIST_PATH} {{\n"
        f"      try_files /dags-{size}/offset-$arg_offset.json /dags-{size}/all.json =404;\n"
        f"    }}\n" for size in list_sizes)
    return f"""
daemon off; master_process off; worker_processes 1; pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; default_type application/json; keepalive_requests 1000000;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port}; root {root};
    location = /.well-known/openid-configuration {{ alias {root}/discovery.json; }}
    location = /jwks.json {{ alias {root}/jwks.json; }}
    location = {LIST_PATH} {{
      try_files /dags/offset-$arg_offset.json /dags/all.json =404;
    }}
{more_lists}    location / {{ try_files /body.json =404; }}
  }}
}}
"""


def haproxy_conf(root: Path, stack: Stack, threads: int) -> str:
    """JWT checks as HAProxy's 2.6 manual shows them (`jwt_verify`, 7.3.1), minus nothing:
    algorithm, signature, issuer, audience and expiry; the bearer token is not forwarded."""
    port = stack.ports["haproxy" if threads == 1 else "haproxy_2t"]
    return f"""
global
  nbthread {threads}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:{port}
  http-request deny status 401 unless {{ http_auth_bearer -m found }}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request deny status 401 unless {{ var(txn.alg) -m str RS256 }}
  http-request deny status 401 unless {{ var(txn.iss) -m str {stack.issuer} }}
  http-request deny status 401 unless {{ var(txn.aud) -m str orchgate }}
  http-request deny status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{root}/jwt-public.pem") -m int 1 }}
  http-request set-var(txn.now) date()
  http-request deny status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request del-header authorization
  default_backend nginx
backend nginx
  http-reuse always
  server nginx 127.0.0.1:{stack.ports["nginx"]}
"""  # noqa: E501


def orchgate_conf(stack: Stack, name: str) -> str:
    """The full pipeline; `orchgate_audit_off` differs only in its audit section (from
    `orchgate_audit_on`, which is `orchgate`'s twin)."""
    audit = ("audit: {enabled: false}" if name == "orchgate_audit_off" else
             f"audit: {{file: {name}-audit.jsonl, stdout: false, fsync: true, "
             "checkpoint_key_file: checkpoint.key}")
    return f"""
listen: {{host: 127.0.0.1, port: {stack.ports[name]}}}
issuers: [{{issuer: "{stack.issuer}", audiences: [orchgate], algorithms: [RS256]}}]
upstreams:
  airflow:
    url: {stack.issuer}
    credential: {{mode: jwt-hs512, signing_secret_file: airflow-secret}}
  prefect:
    url: http://127.0.0.1:{stack.ports["prefect"]}
    credential: {{auth_string_file: prefect-auth}}
policy: {{model: {ROOT}/policies/model.conf, files: [{stack.policy(name).name}]}}
{audit}
"""
