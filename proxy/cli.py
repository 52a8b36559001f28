"""The `orchgate` command: serve; check configuration; check, explain and test policies."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from proxy.audit import cli as audit_commands
from proxy.settings import ConfigError, MetricsSettings, load_settings

# In-flight requests get this long after SIGTERM (docs/operations.md: the pod's
# terminationGracePeriodSeconds covers it and the preStop pause).
DRAIN_SECONDS = 30


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(args.config)
            return _serve(args.config, settings.host, settings.port, args.workers,
                          settings.metrics)
        if args.command == "config":
            settings = load_settings(args.file)
            print(f"{settings.source}: ok")
            return 0
        if args.command == "audit":
            from proxy.audit.cli import run

            return run(args)
        return _policy(args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, type=Path, help="orchgate.yaml")
    serve.add_argument("--workers", type=int, default=1)

    config = commands.add_parser("config", help="configuration files")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)

    audit_commands.add_commands(commands)

    policy = commands.add_parser("policy", help="policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    for name, text in (("check", "lint the policy files"),
                       ("explain", "explain one decision"),
                       ("test", "run policy test files")):
        sub = policy_commands.add_parser(name, help=text)
        sub.add_argument("--config", type=Path, help="take model and policy files from it")
        sub.add_argument("--model", type=Path, help="model.conf (without --config)")
        sub.add_argument("--policy", type=Path, action="append", default=[],
                         help="a policy file (repeatable; without --config)")
        if name == "explain":
            sub.add_argument("--principal", required=True, help="user:<sub> or sa:<client>")
            sub.add_argument("--groups", default="", help="comma-separated token groups")
            sub.add_argument("--system", required=True, choices=("airflow", "prefect"))
            sub.add_argument("--workflow", required=True)
            sub.add_argument("--action", required=True,
                             choices=("read", "run", "deploy", "admin"))
            sub.add_argument("--tags", default="", help="owner tags, e.g. a,b for owner:a")
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "test":
            sub.add_argument("files", nargs="+", type=Path)
    return parser


def _policy_files(args: argparse.Namespace) -> tuple[Path, tuple[Path, ...]] | None:
    if args.config is not None:
        settings = load_settings(args.config)
        return settings.policy.model, settings.policy.files
    if args.model is not None and args.policy:
        return args.model, tuple(args.policy)
    return None


def _policy(args: argparse.Namespace) -> int:
    from proxy.policy import PolicyError, compile_policy, load_policy
    from proxy.policy.testing import PolicyTestError, run_file

    files = _policy_files(args)
    if files is None and args.policy_command != "test":
        print("give --config FILE, or --model FILE and --policy FILE…", file=sys.stderr)
        return 2
    try:
        source = load_policy(*files) if files else None
    except PolicyError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    if args.policy_command == "check":
        assert source is not None
        return _check(source)
    snapshot = compile_policy(source, 1) if source else None
    if args.policy_command == "explain":
        assert snapshot is not None
        return _explain(args, snapshot)
    failed = total = 0
    for path in args.files:
        try:
            results = run_file(path, snapshot)
        except (PolicyTestError, PolicyError) as err:
            print(err, file=sys.stderr)
            return 1
        for result in results:
            total += 1
            if not result.passed:
                failed += 1
                print(f"FAIL {result.file}: {result.name}: {result.detail}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed or total == 0 else 0


def _check(source: object) -> int:
    from proxy.policy.lint import lint
    from proxy.policy.model import PolicySource

    assert isinstance(source, PolicySource)
    findings = lint(source)
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        return 1
    print(f"ok: {len(source.rules)} rules, {len(source.memberships)} role rows, "
          f"{len(source.ownerships)} ownership rows (sha256 {source.digest[:12]})")
    return 0


def _explain(args: argparse.Namespace, snapshot: object) -> int:
    from proxy.catalog.operation import Action
    from proxy.policy.engine import PolicySnapshot
    from proxy.policy.explain import explain, render, subjects_of

    assert isinstance(snapshot, PolicySnapshot)
    subjects = subjects_of(args.principal, args.groups.split(","))
    tags = tuple(f"team:{t}" for t in args.tags.split(",") if t)
    result = explain(snapshot, subjects, args.system, args.workflow, Action.parse(args.action),
                     tags)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def _serve(config: Path, host: str, port: int, workers: int,
           metrics: MetricsSettings | None) -> int:
    import uvicorn

    # The factory re-reads the file in each worker process.
    os.environ["ORCHGATE_CONFIG"] = str(config.resolve())
    os.environ["ORCHGATE_WORKERS"] = str(workers)
    options: dict[str, Any] = dict(
        factory=True, host=host, port=port, workers=workers,
        http="proxy.server:Protocol", loop="uvloop", ws="websockets-sansio", lifespan="on",
        # orchgate sets X-Forwarded-* itself and trusts only configured proxies; uvicorn's
        # own proxy-header handling would rewrite the client address before it.
        proxy_headers=False, server_header=False, access_log=False,
        log_level="warning", timeout_graceful_shutdown=DRAIN_SECONDS,
    )
    if workers <= 1:
        uvicorn.run("proxy.cli:app_from_env", **options)
        return 0
    return _serve_workers(uvicorn.Config("proxy.cli:app_from_env", **options), metrics)


def _serve_workers(config: Any, metrics: MetricsSettings | None) -> int:
    """`--workers N`: a supervisor that gives each worker a listening socket of its own on the
    port (proxy/workers.py), and serves the metrics of every worker (prometheus_client's
    multiprocess mode)."""
    from proxy.workers import Supervisor

    directory = None
    exporter = None
    if metrics is not None:
        from proxy import metrics as prometheus

        # Set before any worker imports prometheus_client; a fresh directory per start, so
        # no sample of an earlier run is summed in.
        directory = tempfile.mkdtemp(prefix="orchgate-metrics-")
        os.environ[prometheus.MULTIPROC_ENV] = directory
        exporter = prometheus.start_server(metrics, prometheus.multiprocess_registry())
    try:
        Supervisor(config).run()
    finally:
        if exporter is not None:
            exporter.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def app_from_env() -> object:
    from proxy import heap
    from proxy.app import create_app

    heap.tune()  # a server's heap (proxy/heap.py); tests and tools keep CPython's defaults

    settings = load_settings(os.environ["ORCHGATE_CONFIG"])
    live = settings.audit.file
    if int(os.environ.get("ORCHGATE_WORKERS", "1")) > 1 and live is not None:
        # One hash chain per process: workers appending to one file would interleave their
        # chains. Each worker's trail is `<name>.w<pid><suffix>` and verifies on its own.
        own = live.with_name(f"{live.stem}.w{os.getpid()}{live.suffix}")
        settings = replace(settings, audit=replace(settings.audit, file=own))
    return create_app(settings)
