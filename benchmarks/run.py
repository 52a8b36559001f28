"""orchgate against direct access and a native gateway, on loopback. `make bench`.

Starts nginx (the upstream: a 1 KB JSON body, the JWKS, a 1,000-DAG list), HAProxy verifying
the same RS256 token with `jwt_verify` (1 and 2 threads), a stand-in Prefect socket server,
and orchgate with its full pipeline (1 and 2 workers, and twins of 1 worker with and without
the audit trail; see benchmarks/stack.py). Then, round after round, each target in turn:

- wrk at 1, 16 and 64 connections: requests/s, p50/p99/p99.9, CPU per request, RSS;
  at 16 and 64 also 2 workers vs 2 threads; at 16 also the audit trail on and off (twins
  that serve nothing else, one after the other), and policy reloads every 0.5 s during the run;
- a constant offered rate (open loop): latencies from each request's due time;
- one policy reload at the constant rate: the latency of the requests due during it against
  the same stretch of a run without one (benchmarks/reload.py);
- a 1,000-item list filtered by orchgate vs the same list read directly, at 1 connection;
- a Prefect event stream relayed over a websocket: frames/s and round-trip latency.

Results: printed, written to benchmarks/results/<UTC date>-proxy.json, and the table in
docs/performance.md ("Throughput and latency — make bench") replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import operator
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from benchmarks import report
from benchmarks.load import Latencies, constant_rate, wrk
from benchmarks.relay import relay
from benchmarks.reload import reload_round
from benchmarks.stack import ITEM_PATH, LIST_ITEMS, LIST_PATH, ROOT, SOCKET_PATH, Stack

T = TypeVar("T")
ROUND_TRIPS = 2000  # socket frames sent one at a time for the latency figures
Runs = dict[str, dict[str, list[report.Run]]]  # level → target → one run per round


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


def server_of(target: str) -> str:
    return {"direct": "nginx", "orchgate_reloading": "orchgate"}.get(target, target)


def closed_loop_plan(levels: list[int]) -> list[tuple[int, str]]:
    plan = []
    for c in levels:
        names = ["direct", "haproxy", "orchgate"]
        if c >= 16:
            names += ["haproxy_2t", "orchgate_2w"]
        if c == 16:
            names += ["orchgate_audit_on", "orchgate_audit_off", "orchgate_reloading"]
        plan += [(c, name) for name in names]
    return plan


def measured(stack: Stack, target: str, work: Callable[[], T]) -> tuple[T, report.Run]:
    """Run `work` and read the CPU time it cost the target's processes and nginx's."""
    server, nginx = stack.servers[server_of(target)], stack.servers["nginx"]
    before, before_up = server.usage(), nginx.usage()
    result = work()
    after, after_up = server.usage(), nginx.usage()
    usage: report.Run = {"cpu_seconds": after.cpu_seconds - before.cpu_seconds,
                         "rss_mb": [round(mb, 1) for mb in after.rss_mb]}
    if server is not nginx:
        usage["upstream_cpu_seconds"] = after_up.cpu_seconds - before_up.cpu_seconds
    return result, usage


def latency_run(latencies: Latencies, usage: report.Run) -> report.Run:
    run: report.Run = {
        "requests_per_second": round(latencies.requests_per_second, 1),
        "p50_ms": latencies.p50_ms, "p99_ms": latencies.p99_ms,
        "p999_ms": latencies.p999_ms, "errors": latencies.errors,
        "non_2xx": latencies.non_2xx, "requests": latencies.requests,
        "cpu_us_per_request": round(usage["cpu_seconds"] * 1e6 / max(latencies.requests, 1), 1),
        "rss_mb": usage["rss_mb"],
    }
    if "upstream_cpu_seconds" in usage:
        run["upstream_cpu_us_per_request"] = round(
            usage["upstream_cpu_seconds"] * 1e6 / max(latencies.requests, 1), 1)
    return run


def check_targets(stack: Stack) -> None:
    """Each target answers 200 before anything is measured, the list is filtered, and
    HAProxy and orchgate both refuse the tokens they must refuse."""
    for _, target in closed_loop_plan([16]):
        get(stack.url(server_of(target), ITEM_PATH), stack.token, 200)
    body = get(stack.url("orchgate", LIST_PATH + "?limit=100"), stack.token, 200)
    if body.get("total_entries") != LIST_ITEMS * 3 // 4:
        raise SystemExit(f"the filtered list shows {body.get('total_entries')} DAGs, "
                         f"expected {LIST_ITEMS * 3 // 4}")
    for server in ("haproxy", "orchgate"):
        for why, token in stack.refused_tokens.items():
            get(stack.url(server, ITEM_PATH), token, 401, why)


def get(url: str, token: str, status: int, why: str = "") -> dict[str, Any]:
    parts = urlsplit(url)
    http = HTTPConnection(parts.netloc, timeout=10)
    try:
        http.request("GET", f"{parts.path}?{parts.query}",
                     headers={"Authorization": f"Bearer {token}"})
        answer = http.getresponse()
        body = answer.read()
    finally:
        http.close()
    if answer.status != status:
        raise SystemExit(f"GET {url} ({why or 'valid token'}) answered {answer.status}, "
                         f"not {status}: {body[:300]!r}")
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def progress(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rate", type=float, default=2000, help="constant offered rate")
    parser.add_argument("--rate-seconds", type=float, default=6)
    parser.add_argument("--rate-runs", type=int, default=3,
                        help="constant-rate runs of each target per round (paired, median)")
    parser.add_argument("--reloads", type=int, default=2,
                        help="policy reloads measured per round (at the constant rate)")
    parser.add_argument("--policy-rows", type=int, default=10000,
                        help="synthetic permission rows added to the example policy")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not rewrite the table in docs/performance.md")
    args = parser.parse_args()
    began = time.monotonic()
    machine = report.machine()
    with tempfile.TemporaryDirectory(prefix="orchgate-bench-") as tmp:
        stack = Stack(Path(tmp), args.policy_rows)
        stack.write_files()
        with stack.serving():
            stack.start_all()
            check_targets(stack)
            results = measure(stack, args)
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    full: dict[str, Any] = {
        "date": date, "command": "make bench", "machine": machine,
        "settings": {"seconds": args.seconds, "rounds": args.rounds,
                     "connections": args.connections, "rate": args.rate,
                     "rate_seconds": args.rate_seconds, "rate_runs": args.rate_runs,
                     "reloads": args.reloads,
                     "policy_rows": args.policy_rows + 9},
        "elapsed_seconds": round(time.monotonic() - began, 1),
        **results,
    }
    full["targets"] = report.targets(full)
    out = report.write_results(full, "proxy")
    print(report.console(full))
    print(f"written {out.relative_to(ROOT)} ({full['elapsed_seconds']:.0f} s)")
    if not args.no_docs:
        report.update_docs(ROOT / "docs/performance.md",
                           report.markdown(full, str(out.relative_to(ROOT))))
        print("updated docs/performance.md")
    return 0


def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    plan = closed_loop_plan(args.connections)
    rate_targets = ("direct", "haproxy", "orchgate")
    list_targets = {"direct": stack.url("nginx", LIST_PATH + "?limit=100"),
                    "orchgate": stack.url("orchgate", LIST_PATH + "?limit=100")}
    socket_targets = {"direct": (f"ws://127.0.0.1:{stack.ports['prefect']}{SOCKET_PATH}",
                                 stack.prefect_auth),
                      "orchgate": (f"ws://127.0.0.1:{stack.ports['orchgate']}/prefect"
                                   f"{SOCKET_PATH}", stack.token)}
    progress("warming up (keys, caches, connection pools)")
    for target in dict.fromkeys(t for _, t in plan):
        wrk(stack.url(server_of(target), ITEM_PATH), stack.token, 16, 1)
    for url in list_targets.values():
        wrk(url, stack.token, 1, 1)
    for url, token in socket_targets.values():
        relay(url, token, round_trips=100, seconds=0.5)

    closed: Runs = {}
    rate: dict[str, list[report.Run]] = {}
    listing: dict[str, list[report.Run]] = {}
    socket: dict[str, list[report.Run]] = {}
    reloads: list[dict[str, float]] = []
    for round_ in range(1, args.rounds + 1):
        for c, target in plan:
            url = stack.url(server_of(target), ITEM_PATH)
            with Reloading(stack.policy("orchgate"), enabled=target == "orchgate_reloading"):
                lat, usage = measured(stack, target, partial(wrk, url, stack.token, c,
                                                             args.seconds))
            run = latency_run(lat, usage)
            closed.setdefault(f"c{c}", {}).setdefault(target, []).append(run)
            progress(f"round {round_} c{c:<3} {target:<19} {run['requests_per_second']:>9,.0f}"
                     f" req/s  p50 {run['p50_ms']:.3f}  p99 {run['p99_ms']:.2f} ms")
        for i in range(args.rate_runs):  # a p99 of 12,000 requests moves a lot from run to run
            for target in rate_targets if i % 2 == 0 else rate_targets[::-1]:
                url = stack.url(server_of(target), ITEM_PATH)
                lat, usage = measured(stack, target, partial(constant_rate, url, stack.token,
                                                             args.rate, args.rate_seconds))
                run = latency_run(lat, usage)
                rate.setdefault(target, []).append(run)
                progress(f"round {round_} {args.rate:g}/s {target:<15} p50 "
                         f"{run['p50_ms']:.3f}  p99 {run['p99_ms']:.2f}  "
                         f"p99.9 {run['p999_ms']:.2f} ms")
        for _ in range(args.reloads):
            one = reload_round(stack.url("orchgate", ITEM_PATH), stack.token,
                               stack.policy("orchgate"), stack.root / "orchgate.log", args.rate,
                               RELOAD_RUN_SECONDS, RELOAD_AT_SECONDS)
            reloads.append(one)
            progress(f"round {round_} reload at {args.rate:g}/s: p99 during "
                     f"{one['reload_p99_ms']:.2f} ms, without {one['steady_p99_ms']:.2f} ms "
                     f"({one['window_seconds']:.2f} s window)")
        for target, url in list_targets.items():
            lat, usage = measured(stack, target, partial(wrk, url, stack.token, 1,
                                                         args.seconds))
            run = latency_run(lat, usage)
            listing.setdefault(target, []).append(run)
            progress(f"round {round_} list {target:<15} p50 {run['p50_ms']:.3f}  "
                     f"p99 {run['p99_ms']:.2f} ms")
        for target, (url, token) in socket_targets.items():
            server = "prefect" if target == "direct" else target
            relayed, usage = measured(stack, server, partial(relay, url, token, ROUND_TRIPS))
            run = {**asdict(relayed), "rss_mb": usage["rss_mb"],
                   "cpu_us_per_frame": round(usage["cpu_seconds"] * 1e6 / (
                       relayed.frames + ROUND_TRIPS), 1)}
            socket.setdefault(target, []).append(run)
            progress(f"round {round_} socket {target:<13} {run['frames_per_second']:,.0f} "
                     f"frames/s  round trip p50 {run['p50_ms']:.3f} ms")
    return summarize(closed, rate, listing, socket, reloads, args)


RELOAD_RUN_SECONDS = 8.0
RELOAD_AT_SECONDS = 3.0
RATIO_PAIRS = (("orchgate", "direct"), ("orchgate", "haproxy"), ("haproxy", "direct"),
               ("orchgate_2w", "haproxy_2t"), ("orchgate_2w", "orchgate"),
               ("haproxy_2t", "haproxy"), ("orchgate_audit_on", "orchgate_audit_off"),
               ("orchgate", "orchgate_audit_on"),
               ("orchgate_reloading", "orchgate"))


def paired(runs: list[report.Run], others: list[report.Run], key: str,
           combine: Callable[[float, float], float]) -> float:
    """combine(run, other) for the runs of the same round, median over the rounds."""
    return round(statistics.median(combine(r[key], o[key])
                                   for r, o in zip(runs, others, strict=True)), 3)


def summarize(closed: Runs, rate: dict[str, list[report.Run]],
              listing: dict[str, list[report.Run]], socket: dict[str, list[report.Run]],
              reloads: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    median = {level: {name: report.median_run(runs) for name, runs in targets.items()}
              for level, targets in closed.items()}
    # Ratios and differences are taken within a round, then the median over the rounds: the
    # targets of one round share the machine's load of that minute.
    ratios: dict[str, dict[str, float]] = {}
    added: dict[str, dict[str, dict[str, float]]] = {}
    for level, targets in closed.items():
        ratios[level] = {f"{a}/{b}": paired(targets[a], targets[b], "requests_per_second",
                                             lambda x, y: x / y if y else float("nan"))
                         for a, b in RATIO_PAIRS if a in targets and b in targets}
        added[level] = {name: {p: paired(runs, targets["direct"], f"{p}_ms", operator.sub)
                               for p in ("p50", "p99", "p999")}
                        for name, runs in targets.items() if name != "direct"}
    rate_median = {name: report.median_run(runs) for name, runs in rate.items()}
    list_median = {name: report.median_run(runs) for name, runs in listing.items()}
    return {
        "closed_loop": {"runs": closed, "median": median, "ratios": ratios,
                        "added_over_direct_ms": added},
        "fixed_rate": {
            "rate": args.rate, "seconds": args.rate_seconds, "connections": 64,
            "runs_per_round": args.rate_runs,
            "runs": rate, "median": rate_median,
            "added_p99_ms": {name: paired(runs, rate["direct"], "p99_ms", operator.sub)
                             for name, runs in rate.items() if name != "direct"},
        },
        "list": {
            "items": LIST_ITEMS, "visible": LIST_ITEMS * 3 // 4, "connections": 1,
            "runs": listing, "median": list_median,
            "added_ms": {p: paired(listing["orchgate"], listing["direct"], f"{p}_ms",
                                   operator.sub) for p in ("p50", "p99")},
        },
        "socket": {"runs": socket,
                   "median": {name: report.median_run(runs) for name, runs in socket.items()}},
        "reload": summarize_reloads(reloads, args.rate),
    }


def summarize_reloads(runs: list[dict[str, float]], rate: float) -> dict[str, Any]:
    """Medians over the reloads, and the yardstick: how far the windows without a reload
    already differ from one another (their p99's spread over the rounds)."""
    if not runs:
        return {}
    steady = [r["steady_p99_ms"] for r in runs]
    return {
        "rate": rate, "run_seconds": RELOAD_RUN_SECONDS, "runs": runs,
        "median": {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]},
        "added_p99_ms": round(statistics.median(r["reload_p99_ms"] - r["steady_p99_ms"]
                                                for r in runs), 3),
        "steady_p99_spread_ms": round(max(steady) - min(steady), 3),
    }


if __name__ == "__main__":
    sys.exit(main())
