"""Real Airflow 3.3.2 and Prefect 3.9.1 servers on loopback, for the demo and integration tests.

Both run from their own venvs under ``.venvs/`` (their dependency trees clash with orchgate's),
each component in its own process group (see ``procs``). Every start picks fresh free ports;
the home directories (SQLite databases, logs) may be reused across runs to skip cold set-up.

Secrets (the Airflow JWT signing key, the Prefect auth string) are passed in by the caller and
only ever travel through child environments, never through files written here.

    with start_airflow(home, secret, DAGS_DIR) as airflow, start_prefect(home2, auth) as prefect:
        register_prefect_examples(prefect)
        ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from procs import Proc, Stack, StartupError, free_port, http, run, start, wait_http, wait_until

__all__ = [
    "AIRFLOW_VENV",
    "DAGS_DIR",
    "EXAMPLE_DAG_IDS",
    "EXAMPLE_DEPLOYMENTS",
    "FLOWS_DIR",
    "PREFECT_VENV",
    "AirflowHandle",
    "PrefectHandle",
    "airflow_token",
    "basic_auth_header",
    "register_prefect_examples",
    "start_airflow",
    "start_prefect",
    "start_prefect_worker",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AIRFLOW_VENV = REPO / ".venvs" / "airflow"
PREFECT_VENV = REPO / ".venvs" / "prefect"
DAGS_DIR = HERE / "dags"
FLOWS_DIR = HERE / "flows"
PREFECT_EXAMPLES_SCRIPT = HERE / "prefect_examples.py"

# Convention: each file in dags/ defines the DAG named like the file.
EXAMPLE_DAG_IDS = ("shared_housekeeping", "team_a_etl", "team_a_reporting", "team_b_ingest")
# "flow/deployment" -> team tag, as created by prefect_examples.py.
EXAMPLE_DEPLOYMENTS = {
    "team-a-etl/nightly": "team-a",
    "team-b-ingest/hourly": "team-b",
    "shared-housekeeping/daily": "shared",
}

# SimpleAuthManager roles, lowest to highest; a token with any other role gets HTTP 500.
AIRFLOW_ROLES = ("viewer", "user", "op", "admin")


def _clean_env(venv: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment minus anything that would steer the child somewhere else.

    A developer's shell (or CI) may export AIRFLOW_*/PREFECT_* settings or a PYTHONPATH of
    another venv; inheriting those would make the local servers talk to the wrong place.
    """
    drop = ("AIRFLOW_", "PREFECT_", "PYTHON", "VIRTUAL_ENV", "CONDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    # No __pycache__ dirs inside the repo's dags/ and flows/ folders.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _require_venv(venv: Path, tool: str) -> Path:
    exe = venv / "bin" / tool
    if not exe.exists():
        raise StartupError(f"{exe} not found; create the {venv.name} venv first (see README)")
    return exe


# --------------------------------------------------------------------------------- Airflow


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def airflow_token(
    jwt_secret: str,
    sub: str = "orchgate-local",
    role: str = "admin",
    ttl: int = 60,
    audience: str = "apache-airflow",
) -> str:
    """An HS512 SimpleAuthManager token, for readiness checks and test set-up only.

    Hand-rolled with hmac so this module stays stdlib-only (orchgate itself uses pyjwt).
    """
    if role not in AIRFLOW_ROLES:  # any other role makes Airflow answer 500
        raise ValueError(f"role must be one of {AIRFLOW_ROLES}")
    now = int(time.time())
    header = {"alg": "HS512", "typ": "JWT"}
    claims = {"sub": sub, "role": role, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(jwt_secret.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{_b64url(signature)}"


@dataclass
class AirflowHandle:
    """A running Airflow: ``url`` (API at ``url + "/api/v2"``) and its processes."""

    url: str
    home: Path
    env: dict[str, str] = field(repr=False)  # the components' env (holds the JWT secret)
    stack: Stack = field(repr=False)
    jwt_secret: str = field(repr=False)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v2"

    @property
    def procs(self) -> list[Proc]:
        return list(self.stack)

    def token(self, sub: str = "orchgate-local", role: str = "admin", ttl: int = 60) -> str:
        return airflow_token(self.jwt_secret, sub, role, ttl)

    def request(self, method: str, path: str, json_body: Any = None) -> tuple[int, Any]:
        """Call ``/api/v2{path}`` directly (not through orchgate) as an admin."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return http(method, self.api + path, headers=headers, json_body=json_body, timeout=30)

    def stop(self) -> None:
        self.stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _airflow_release() -> str:
    """The installed apache-airflow distributions (core, task SDK, providers), import-free."""
    site = AIRFLOW_VENV.glob("lib/python*/site-packages/apache_airflow*.dist-info")
    return "\n".join(sorted(p.name.removesuffix(".dist-info") for p in site))


def _airflow_env(home: Path, jwt_secret: str, dags_src: Path, port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return _clean_env(
        AIRFLOW_VENV,
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_src),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Two cores: a handful of concurrent task processes is plenty.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            # HS512 key shared with orchgate, which mints per-caller tokens with it.
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            # Defaults 8793/8794 collide between parallel stacks. The log servers bind every
            # interface whatever the port, so the scheduler also runs with --skip-serve-logs.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Its health server would bind 0.0.0.0; keep it off (the API reports health).
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Default is $TMPDIR/airflow, shared by every Airflow on the machine.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "dag_bundles"),
            # Test-friendly intervals (defaults: 300 s / 30 s / 30 s / 5 s).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        },
    )


def _airflow_ready(
    url: str, jwt_secret: str, expect: Collection[str], last: dict[str, str]
) -> bool:
    """Health says metadatabase/scheduler/dag-processor are healthy and ``expect`` is served."""
    try:
        status, health = http("GET", f"{url}/api/v2/monitor/health")
        if status != 200 or not isinstance(health, dict):
            last["seen"] = f"health HTTP {status}"
            return False
        states = {k: (v or {}).get("status") for k, v in health.items() if isinstance(v, dict)}
        wanted = ("metadatabase", "scheduler", "dag_processor")
        if any(states.get(part) != "healthy" for part in wanted):
            last["seen"] = f"health {states}"
            return False
        headers = {"Authorization": f"Bearer {airflow_token(jwt_secret)}"}
        status, body = http("GET", f"{url}/api/v2/dags?limit=100", headers=headers)
        if status != 200 or not isinstance(body, dict):
            last["seen"] = f"GET /dags HTTP {status}: {str(body)[:300]}"
            return False
        have = {d["dag_id"] for d in body.get("dags", [])}
        missing = sorted(set(expect) - have)
        if missing:
            _, errors = http("GET", f"{url}/api/v2/importErrors", headers=headers)
            last["seen"] = f"DAGs missing {missing}; import errors: {str(errors)[:1500]}"
            return False
        return True
    except OSError as err:
        last["seen"] = repr(err)
        return False


def start_airflow(
    home: Path,
    jwt_secret: str,
    dags_src: Path = DAGS_DIR,
    *,
    expect_dags: Collection[str] | None = None,
    timeout: float = 120.0,
) -> AirflowHandle:
    """Migrate the DB under ``home`` and run api-server, scheduler and dag-processor.

    Returns once the API is healthy and serves the DAGs in ``expect_dags`` (default: one per
    ``*.py`` file in ``dags_src``, named like the file). Stop with ``handle.stop()`` or use it as
    a context manager; on a failed start everything already started is stopped again.
    A reused ``home`` keeps its database: earlier runs, pause flags, variables and so on.
    """
    airflow = _require_venv(AIRFLOW_VENV, "airflow")
    home = home.resolve()
    dags_src = dags_src.resolve()
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "proc-logs"
    if expect_dags is None:
        expect_dags = sorted(p.stem for p in dags_src.glob("*.py") if not p.name.startswith("_"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _airflow_env(home, jwt_secret, dags_src, port)
    deadline = time.monotonic() + timeout

    # `db migrate` is idempotent but costs ~2.5 s even when there is nothing to do, so a
    # reused home remembers which Airflow release migrated it. (Should the marker lie, the
    # api-server refuses to start on an unmigrated DB and the log tail says so.)
    marker = home / ".orchgate-migrated"
    release = _airflow_release()
    db_file = home / "airflow.db"
    if not (db_file.exists() and marker.exists() and marker.read_text() == release):
        run(
            "airflow-db-migrate",
            [str(airflow), "db", "migrate"],
            env,
            home,
            logs / "db-migrate.log",
            timeout=timeout,
        )
        marker.write_text(release)

    with Stack() as stack:
        # Started first so it stops last: the scheduler's shutdown waits for running tasks,
        # and those report their state through the api-server's execution API.
        api = stack.start(
            "airflow-api-server",
            [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env,
            home,
            logs / "api-server.log",
        )
        # The dag-processor parses the DAG files while the API server boots, so DAGs become
        # visible without a separate (sequential) `airflow dags reserialize`.
        stack.start(
            "airflow-dag-processor",
            [str(airflow), "dag-processor"],
            env,
            home,
            logs / "dag-processor.log",
        )
        # --skip-serve-logs: its log server binds all interfaces (host "" is hard-coded);
        # the api-server reads LocalExecutor task logs straight from home/logs anyway.
        stack.start(
            "airflow-scheduler",
            [str(airflow), "scheduler", "--skip-serve-logs"],
            env,
            home,
            logs / "scheduler.log",
        )
        remaining = max(1.0, deadline - time.monotonic())
        wait_http(f"{url}/api/v2/monitor/health", remaining, proc=api)
        last = {"seen": "nothing yet"}

        def ready() -> bool:
            for proc in stack:
                if not proc.alive():
                    raise StartupError(
                        f"{proc.name} exited with {proc.popen.returncode}; last lines of "
                        f"{proc.log_path}:\n{proc.tail()}"
                    )
            return _airflow_ready(url, jwt_secret, expect_dags, last)

        remaining = max(1.0, deadline - time.monotonic())
        wait_until(
            ready,
            remaining,
            f"Airflow at {url} to be healthy with DAGs {expect_dags}",
            proc=api,
            interval=0.5,
            describe=lambda: last["seen"],
        )
        return AirflowHandle(url, home, env, stack.pop_all(), jwt_secret)


# --------------------------------------------------------------------------------- Prefect


def basic_auth_header(auth_string: str) -> dict[str, str]:
    """The header Prefect's server expects for ``PREFECT_SERVER_API_AUTH_STRING``."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


@dataclass
class PrefectHandle:
    """A running Prefect server: ``url`` (API at ``url + "/api"``) and its process."""

    url: str
    home: Path
    auth_string: str = field(repr=False)
    stack: Stack = field(repr=False)

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    @property
    def procs(self) -> list[Proc]:
        return list(self.stack)

    def client_env(self) -> dict[str, str]:
        """Env for a Prefect client/worker (Prefect venv) talking to this server directly."""
        return _clean_env(
            PREFECT_VENV,
            {
                "PREFECT_HOME": str(self.home / "client"),
                "PREFECT_API_URL": self.api,
                "PREFECT_API_AUTH_STRING": self.auth_string,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            },
        )

    def request(
        self, method: str, path: str, json_body: Any = None, *, retries: int = 5
    ) -> tuple[int, Any]:
        """Call ``/api{path}`` directly (not through orchgate) with the Basic credential.

        On SQLite, concurrent writers (worker polls, services, event persister) make some
        writes fail with "database is locked", which the server answers with a bare 503 that
        Prefect's own clients retry; so do we, ``retries`` times with a short backoff.
        """
        for attempt in range(retries + 1):
            status, body = http(
                method,
                self.api + path,
                headers=basic_auth_header(self.auth_string),
                json_body=json_body,
                timeout=30,
            )
            if status != 503 or attempt == retries:
                break
            time.sleep(0.2 * 2**attempt)
        return status, body

    def stop(self) -> None:
        self.stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_prefect(home: Path, auth_string: str, *, timeout: float = 90.0) -> PrefectHandle:
    """Run ``prefect server start`` on 127.0.0.1 with its SQLite DB under ``home``.

    Returns once ``/api/health`` answers and the auth string is accepted.
    """
    prefect = _require_venv(PREFECT_VENV, "prefect")
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _clean_env(
        PREFECT_VENV,
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            # One shared Basic credential for the whole API (only health/ready are exempt).
            "PREFECT_SERVER_API_AUTH_STRING": auth_string,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The API is all we need; skipping the UI saves start-up work.
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            # Retryable errors (e.g. SQLite busy) become a bare 503; log their cause.
            "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
            # Live logs for `prefect deployment run --watch` (the /logs/out socket): off by
            # default, the socket then stays silent.
            "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
            "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
        },
    )
    deadline = time.monotonic() + timeout
    with Stack() as stack:
        server = stack.start(
            "prefect-server",
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            home,
            home / "proc-logs" / "server.log",
        )
        wait_http(f"{url}/api/health", timeout, proc=server)
        # Prove the credential works too, so a wrong auth string fails here, not in a test.
        remaining = max(1.0, deadline - time.monotonic())
        wait_http(
            f"{url}/api/admin/version",
            remaining,
            proc=server,
            headers=basic_auth_header(auth_string),
        )
        return PrefectHandle(url, home, auth_string, stack.pop_all())


def register_prefect_examples(handle: PrefectHandle, *, timeout: float = 120.0) -> dict[str, str]:
    """Create work pool ``local`` and the example flows and deployments of the two teams.

    Runs ``prefect_examples.py`` with the Prefect venv's python (the client needs prefect
    itself). Idempotent: Prefect updates deployments of the same flow and name in place.
    Returns ``{"flow/deployment": deployment_id}``.
    """
    python = _require_venv(PREFECT_VENV, "python")
    log = handle.home / "proc-logs" / "register-examples.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [str(python), str(PREFECT_EXAMPLES_SCRIPT), str(FLOWS_DIR)],
            env=handle.client_env(),
            cwd=FLOWS_DIR,
            capture_output=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as err:
        raise StartupError(f"registering Prefect examples timed out after {timeout:.0f}s") from err
    log.write_bytes(done.stdout + b"\n--- stderr ---\n" + done.stderr)
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise StartupError(
            f"{PREFECT_EXAMPLES_SCRIPT.name} exited with {done.returncode}; see {log}:\n"
            + "\n".join(done.stderr.decode("utf-8", "replace").splitlines()[-40:])
        )
    ids = json.loads(lines[-1])  # the script prints its JSON result last
    if not isinstance(ids, dict) or set(ids) != set(EXAMPLE_DEPLOYMENTS):
        raise StartupError(f"unexpected output from {PREFECT_EXAMPLES_SCRIPT.name}: {lines[-1]}")
    return {str(k): str(v) for k, v in ids.items()}


def start_prefect_worker(
    handle: PrefectHandle,
    pool: str = "local",
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Proc:
    """Start a process worker for ``pool`` and return once the server lists it as online.

    By default the worker talks to the server directly with the auth string; ``extra_env``
    overrides that (e.g. ``PREFECT_API_URL`` of the proxy plus ``PREFECT_CLIENT_CUSTOM_HEADERS``);
    an empty value removes a variable, e.g. ``{"PREFECT_API_AUTH_STRING": ""}``.
    The caller owns the returned Proc (``proc.stop()``, or ``stack.add(proc)``). Stopping sends
    SIGINT twice (a worker's first SIGINT only starts a graceful shutdown) before SIGTERM.
    """
    prefect = _require_venv(PREFECT_VENV, "prefect")
    env = handle.client_env()
    # Poll every 2 s instead of 10 s so created runs start promptly.
    env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    for key, value in (extra_env or {}).items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    name = f"orchgate-local-{secrets.token_hex(4)}"
    worker = start(
        "prefect-worker",
        [
            str(prefect),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            name,
            "--install-policy",
            "never",
        ],
        env,
        handle.home,
        handle.home / "proc-logs" / f"worker-{name}.log",
        soft_signals=(signal.SIGINT, signal.SIGINT),
        grace=3.0,
    )
    try:

        def online() -> bool:
            try:
                status, body = handle.request("POST", f"/work_pools/{pool}/workers/filter", {})
            except OSError:
                return False
            return status == 200 and any(
                w.get("name") == name and w.get("status") == "ONLINE" for w in body or []
            )

        wait_until(
            online, timeout, f"Prefect worker {name} on pool {pool!r}", proc=worker, interval=0.5
        )
    except BaseException:
        worker.stop()
        raise
    return worker
