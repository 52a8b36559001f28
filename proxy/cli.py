"""The `orchgate` command: serve, and check configuration and policy files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.settings import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, type=Path, help="orchgate.yaml")
    serve.add_argument("--workers", type=int, default=1)

    config = commands.add_parser("config", help="configuration files")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)

    policy = commands.add_parser("policy", help="policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    pcheck = policy_commands.add_parser("check", help="validate the policy a config loads")
    pcheck.add_argument("--config", required=True, type=Path)

    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config if args.command != "config" else args.file)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    if args.command == "config":
        print(f"{settings.source}: ok")
        return 0
    if args.command == "policy":
        return _policy_check(settings.policy.model, settings.policy.files)
    return _serve(args.config, settings.host, settings.port, args.workers)


def _policy_check(model: Path, files: tuple[Path, ...]) -> int:
    from proxy.policy import PolicyError, load_policy

    try:
        source = load_policy(model, files)
    except PolicyError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"ok: {len(source.rules)} rules, {len(source.memberships)} role rows, "
          f"{len(source.ownerships)} ownership rows (sha256 {source.digest[:12]})")
    return 0


def _serve(config: Path, host: str, port: int, workers: int) -> int:
    import os

    import uvicorn

    # The factory re-reads the file in each worker process.
    os.environ["ORCHGATE_CONFIG"] = str(config.resolve())
    uvicorn.run(
        "proxy.cli:app_from_env", factory=True, host=host, port=port, workers=workers,
        http="httptools", loop="uvloop", ws="websockets-sansio", lifespan="on",
        # orchgate sets X-Forwarded-* itself and trusts only configured proxies; uvicorn's
        # own proxy-header handling would rewrite the client address before it.
        proxy_headers=False, server_header=False, access_log=False,
        log_level="warning", timeout_graceful_shutdown=30,
    )
    return 0


def app_from_env() -> object:
    import os

    from proxy.app import create_app

    return create_app(load_settings(os.environ["ORCHGATE_CONFIG"]))
