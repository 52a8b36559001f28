"""How orchgate's cost grows with the policy, the token and the list: `make bench-scaling`.

On loopback, in front of nginx as in `make bench`, orchgate with its full pipeline:

- policy size: one orchgate per size (the example policy plus 100, 10,000 and 100,000
  synthetic permission rows), each at 16 connections: requests/s, CPU per request, RSS, and
  the time from start to listening (the policy is compiled before orchgate listens);
- token size: one orchgate, callers whose tokens carry 1, 16, 64 and 256 groups (256 is the
  most orchgate accepts), each group a subject the policy has rows for;
- list size: `GET /airflow/api/v2/dags?limit=100` at 1 connection against Airflows whose list
  holds 100, 1,000 and 5,000 DAGs (a quarter hidden from the caller), and the same list read
  directly: the time orchgate adds.

The targets of each table take turns, round after round; medians over the rounds. Results:
printed, written to benchmarks/results/<UTC date>-scaling.json, and the section
"Scaling — make bench-scaling" of docs/performance.md replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.load import wrk
from benchmarks.run import get, latency_run, measured
from benchmarks.stack import (
    ITEM_PATH,
    LIST_ITEMS,
    LIST_PATH,
    ROOT,
    RUNTIME,
    Stack,
    free_port,
    orchgate_conf,
    synthetic_rows,
    tool,
)

SECTION = "## Scaling — make bench-scaling"
POLICY_ROWS = (100, 10_000, 100_000)
GROUPS = (1, 16, 64, 256)
LIST_SIZES = (100, LIST_ITEMS, 5_000)
BASE = f"rows_{POLICY_ROWS[1]}"  # the orchgate of `make bench`: token and 1,000-DAG list


def start_orchgate(stack: Stack, name: str, rows: int, list_items: int = LIST_ITEMS) -> float:
    """Start one orchgate (`make bench`'s configuration with its own policy, port and trail);
    the seconds from its start until it listens."""
    stack.ports[name] = free_port()
    stack.policy(name).write_text(
        (ROOT / "policies/policy.csv").read_text() + synthetic_rows(rows))
    conf = orchgate_conf(stack, name)
    if list_items != LIST_ITEMS:  # an Airflow whose list has `list_items` DAGs
        conf = conf.replace(f"url: {stack.issuer}\n", f"url: {stack.issuer}/n{list_items}\n", 1)
    (stack.root / f"{name}.yaml").write_text(conf)
    began = time.monotonic()
    stack.start(name, [str(RUNTIME / "orchgate"), "serve", "--config",
                       str(stack.root / f"{name}.yaml")])
    return round(time.monotonic() - began, 2)


def rounds(count: int, plan: dict[str, Callable[[], report.Run]]) -> dict[str, report.Run]:
    """Each measurement of the plan in turn, `count` times; the median of each."""
    runs: dict[str, list[report.Run]] = {name: [] for name in plan}
    for _ in range(count):
        for name, measure in plan.items():
            runs[name].append(measure())
            print(f"{name}: {runs[name][-1]['requests_per_second']:,.0f} req/s", flush=True)
    return {name: report.median_run(r) for name, r in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not rewrite the section in docs/performance.md")
    args = parser.parse_args()
    began = time.monotonic()
    machine = report.machine()
    seconds = args.seconds
    with tempfile.TemporaryDirectory(prefix="orchgate-scaling-") as tmp:
        stack = Stack(Path(tmp), POLICY_ROWS[1],
                      list_sizes=tuple(n for n in LIST_SIZES if n != LIST_ITEMS))
        stack.write_files()
        with stack.serving():
            stack.start("nginx", [tool("nginx"), "-p", tmp, "-c", str(Path(tmp) / "nginx.conf")])
            started = {f"rows_{rows}": start_orchgate(stack, f"rows_{rows}", rows)
                       for rows in POLICY_ROWS}
            for items in LIST_SIZES:
                if items != LIST_ITEMS:
                    start_orchgate(stack, f"list_{items}", POLICY_ROWS[1], items)
            lists = {items: BASE if items == LIST_ITEMS else f"list_{items}"
                     for items in LIST_SIZES}
            tokens = {n: stack.sign(groups=["team-a-deployers", *(f"g{i}" for i in range(n - 1))])
                      for n in GROUPS}

            def closed(name: str, token: str, connections: int, path: str) -> report.Run:
                url = (f"http://127.0.0.1:{stack.ports[name]}"
                       f"{'' if name == 'nginx' else '/airflow'}{path}")
                latencies, usage = measured(stack, name, partial(
                    wrk, url, token, connections, seconds))
                return latency_run(latencies.checked(name), usage)

            for name in (*started, *(f"list_{n}" for n in LIST_SIZES if n != LIST_ITEMS)):
                get(f"http://127.0.0.1:{stack.ports[name]}/airflow{ITEM_PATH}", stack.token,
                    200, name)
                wrk(f"http://127.0.0.1:{stack.ports[name]}/airflow{ITEM_PATH}", stack.token,
                    16, 1)  # warm up
            for items, name in lists.items():
                body = get(f"http://127.0.0.1:{stack.ports[name]}/airflow{LIST_PATH}?limit=100",
                           stack.token, 200, name)
                if body.get("total_entries") != items * 3 // 4:
                    raise SystemExit(f"{name}: the filtered list shows "
                                     f"{body.get('total_entries')} DAGs, expected {items * 3 // 4}")

            policy = rounds(args.rounds, {
                f"rows_{rows}": partial(closed, f"rows_{rows}", stack.token, 16, ITEM_PATH)
                for rows in POLICY_ROWS})
            token = rounds(args.rounds, {
                f"groups_{n}": partial(closed, BASE, tokens[n], 16, ITEM_PATH) for n in GROUPS})
            listing = rounds(args.rounds, {
                **{f"direct_{items}": partial(
                    closed, "nginx", stack.token, 1,
                    LIST_PATH if items == LIST_ITEMS else f"/n{items}{LIST_PATH}")
                   for items in LIST_SIZES},
                **{f"orchgate_{items}": partial(
                    closed, name, stack.token, 1, f"{LIST_PATH}?limit=100")
                   for items, name in lists.items()}})
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    full: dict[str, Any] = {
        "date": date, "command": "make bench-scaling", "machine": machine,
        "settings": {"seconds": seconds, "rounds": args.rounds},
        "elapsed_seconds": round(time.monotonic() - began, 1),
        "policy": {name: {**run, "rows": int(name.split("_")[1]) + 9,
                          "start_seconds": started[name]} for name, run in policy.items()},
        "token": {name: {**run, "groups": n, "token_bytes": len(tokens[n])}
                  for (name, run), n in zip(token.items(), GROUPS, strict=True)},
        "list": listing,
    }
    report.publish(full, "scaling", markdown, SECTION, docs=not args.no_docs)
    return 0


def markdown(full: dict[str, Any], results_file: str) -> str:
    s = full["settings"]
    lines = [
        SECTION, "", textwrap.fill(
            f"{full['date'][:10]}, `make bench-scaling` (`benchmarks/scaling.py`, "
            f"{full['elapsed_seconds']:.0f} s; results: `{results_file}`). Same machine as "
            f"above; orchgate on Python {full['machine']['python']}; load average before the "
            f"run {full['machine']['load_average_before']}. "
            f"orchgate with the full pipeline of `make bench`; wrk, one thread, "
            f"{s['seconds']:g} s per measurement, median of {s['rounds']} rounds taken in "
            "turns.", 96), "",
        textwrap.fill("Policy size (16 connections; start: from starting orchgate until it "
                      "listens, the policy compiled):", 96), "",
        "| permission rows | req/s | p99 ms | CPU µs/req | RSS MB | start s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in full["policy"].values():
        lines.append(f"| {r['rows']:,} | {r['requests_per_second']:,.0f} | {r['p99_ms']:.2f} | "
                     f"{r['cpu_us_per_request']:.0f} | {max(r['rss_mb']):.0f} | "
                     f"{r['start_seconds']:.1f} |")
    lines += ["", "Token size (16 connections; each group a policy subject):", "",
              "| groups | token bytes | req/s | p99 ms | CPU µs/req |",
              "|---:|---:|---:|---:|---:|"]
    for r in full["token"].values():
        lines.append(f"| {r['groups']} | {r['token_bytes']:,} | "
                     f"{r['requests_per_second']:,.0f} | {r['p99_ms']:.2f} | "
                     f"{r['cpu_us_per_request']:.0f} |")
    lines += ["", textwrap.fill("List size (1 connection; orchgate reads the list in Airflow's "
                                "pages of 100, drops the hidden quarter and answers the first "
                                "100 visible):", 96), "",
              "| DAGs | direct p50 ms | orchgate p50 ms | added p50 ms | added p99 ms | "
              "orchgate CPU ms/req |",
              "|---:|---:|---:|---:|---:|---:|"]
    for items in LIST_SIZES:
        d, o = full["list"][f"direct_{items}"], full["list"][f"orchgate_{items}"]
        lines.append(f"| {items:,} | {d['p50_ms']:.2f} | {o['p50_ms']:.2f} | "
                     f"{o['p50_ms'] - d['p50_ms']:.2f} | {o['p99_ms'] - d['p99_ms']:.2f} | "
                     f"{o['cpu_us_per_request'] / 1000:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
