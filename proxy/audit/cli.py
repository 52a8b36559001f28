"""`orchgate audit verify | query | lineage | keygen` (registered by proxy/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.audit.files import trail_files


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = sub.add_parser("verify", help="check the hash chain and the signed checkpoints")
    verify.add_argument("files", nargs="+", type=Path,
                        help="trail files (rotated siblings of each are included)")
    verify.add_argument("--public-key", type=Path,
                        help="the checkpoint key (public PEM, or the private key file)")
    verify.add_argument("--checkpoints", type=Path,
                        help="the second sink's checkpoint copies (audit.checkpoint_file)")

    query = sub.add_parser("query", help="records matching filters, streamed")
    query.add_argument("files", nargs="+", type=Path)
    query.add_argument("--principal", help="sub, client id, user:<sub> or sa:<client> (glob)")
    query.add_argument("--workflow", help="a workflow id (glob)")
    query.add_argument("--system", choices=("airflow", "prefect"))
    query.add_argument("--action", choices=("read", "run", "deploy", "admin"))
    query.add_argument("--decision", choices=("allow", "deny"))
    query.add_argument("--since", help="ISO 8601 time, or an age: 90s, 15m, 2h, 7d")
    query.add_argument("--until", help="ISO 8601 time, or an age")
    query.add_argument("--event", default="request",
                       help="request (default), intent, checkpoint, start, or * for all")
    query.add_argument("--format", choices=("table", "json", "csv"), default="table")

    lineage = sub.add_parser("lineage", help="the chain of runs that led to a run")
    lineage.add_argument("run", help="prefect:<flow_run_id>, airflow:<dag_id>/<run_id>, or an id")
    lineage.add_argument("files", nargs="+", type=Path)

    keygen = sub.add_parser("keygen", help="a new Ed25519 checkpoint key (and KEY.pub)")
    keygen.add_argument("key", type=Path)


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        from proxy.audit.chain import generate_key

        print(f"wrote {args.key} and {generate_key(args.key)}")
        return 0
    if not trail_files(args.files):
        print("no audit file found: " + " ".join(map(str, args.files)), file=sys.stderr)
        return 2
    if args.audit_command == "verify":
        from proxy.audit.chain import load_public_key
        from proxy.audit.verify import verify

        key = load_public_key(args.public_key) if args.public_key else None
        report = verify(args.files, key, args.checkpoints)
        print(report.render())
        return 0 if report.ok else 1
    from proxy.audit import query

    if args.audit_command == "lineage":
        chain = query.lineage(args.files, args.run)
        if not chain:
            print(f"no run {args.run} was created through orchgate", file=sys.stderr)
            return 1
        print(query.render_lineage(chain))
        return 0
    times = {}
    for name in ("since", "until"):
        text = getattr(args, name)
        if text is not None:
            times[name] = query.parse_time(text)
            if times[name] is None:
                print(f"--{name}: not a time or an age: {text!r}", file=sys.stderr)
                return 2
    where = query.Filter(principal=args.principal, workflow=args.workflow, system=args.system,
                         action=args.action, decision=args.decision, event=args.event,
                         since=times.get("since"), until=times.get("until"))
    query.write(query.query(args.files, where), args.format)
    return 0
