"""The server and the HTTP client under orchgate, measured: `make bench-machinery`.

What does a Python proxy cost with no pipeline at all, and which server and client are the
fastest here? On loopback, in front of the same nginx (a 1 KB JSON body) as `make bench`:

- bare forwarders (benchmarks/bare.py: raw ASGI, the token checked once and then cached,
  forwarded with one client) under uvicorn (httptools, uvloop) and granian (uvloop), with
  aiohttp, httpx2's own transport and httpx2 over aiohttp;
- orchgate's full pipeline (as in `make bench`) under uvicorn (`orchgate serve`) and granian
  (`granian --factory proxy.cli:app_from_env`);
- HAProxy verifying the token on one thread, for the ratio the throughput target is set in.

wrk at 16 connections, one thread; then a constant offered rate (open loop, 2,000 requests/s;
added p99 over nginx read directly). The targets take turns, round after round; medians over
the rounds. Results: printed, written to benchmarks/results/<UTC date>-machinery.json, and the
section "Server and client — make bench-machinery" of docs/performance.md replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.load import constant_rate, wrk
from benchmarks.run import get, latency_run, measured
from benchmarks.stack import ITEM_PATH, RUNTIME, Stack, free_port, orchgate_conf, tool

SECTION = "## Server and client — make bench-machinery"
UVICORN = [str(RUNTIME / "uvicorn"), "--factory", "--host", "127.0.0.1", "--http", "httptools",
           "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
GRANIAN = [str(RUNTIME / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
           "--workers", "1", "--loop", "uvloop", "--no-ws", "--no-access-log",
           "--log-level", "warning"]
# target → (server, app, what it is)
TARGETS: dict[str, tuple[str, str, str]] = {
    "haproxy": ("haproxy", "", "HAProxy 2.6, jwt_verify, 1 thread"),
    "bare_uvicorn_aiohttp": ("uvicorn", "benchmarks.bare:aiohttp_app",
                             "bare forwarder: uvicorn + aiohttp"),
    "bare_granian_aiohttp": ("granian", "benchmarks.bare:aiohttp_app",
                             "bare forwarder: granian + aiohttp"),
    "bare_uvicorn_httpx": ("uvicorn", "benchmarks.bare:httpx_app",
                           "bare forwarder: uvicorn + httpx2"),
    "bare_uvicorn_httpx_aiohttp": ("uvicorn", "benchmarks.bare:httpx_aiohttp_app",
                                   "bare forwarder: uvicorn + httpx2 over aiohttp"),
    "orchgate_uvicorn": ("uvicorn", "", "orchgate, full pipeline: uvicorn (orchgate serve)"),
    "orchgate_granian": ("granian", "proxy.cli:app_from_env",
                         "orchgate, full pipeline: granian"),
}

# the constant-rate table: nginx read directly, and what runs in front of it
RATE_TARGETS = ("direct", "haproxy", "bare_uvicorn_aiohttp", "bare_granian_aiohttp",
                "orchgate_uvicorn", "orchgate_granian")


def start(stack: Stack, name: str) -> None:
    server, app, _ = TARGETS[name]
    root = stack.root
    if name == "haproxy":  # `make bench`'s, on the port the stack gave it
        stack.start(name, [tool("haproxy"), "-db", "-f", str(root / "haproxy.cfg")])
        return
    port = stack.ports[name] = free_port()
    env = {"BARE_UPSTREAM": f"http://127.0.0.1:{stack.ports['nginx']}",
           "BARE_PUBLIC_KEY": str(root / "jwt-public.pem"), "BARE_ISSUER": stack.issuer}
    if name.startswith("orchgate"):
        # `make bench`'s configuration and policy, with its own port and audit trail
        stack.policy(name).write_text(stack.policy("orchgate").read_text())
        config = root / f"{name}.yaml"
        config.write_text(orchgate_conf(stack, name))
        env = {"ORCHGATE_CONFIG": str(config)}
    argv = ([str(RUNTIME / "orchgate"), "serve", "--config", str(root / f"{name}.yaml")]
            if name == "orchgate_uvicorn" else
            [*(UVICORN if server == "uvicorn" else GRANIAN), "--port", str(port), app])
    stack.start(name, argv, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2000, help="constant offered rate")
    parser.add_argument("--rate-seconds", type=float, default=6)
    parser.add_argument("--policy-rows", type=int, default=10000,
                        help="synthetic permission rows added to orchgate's example policy")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not rewrite the section in docs/performance.md")
    args = parser.parse_args()
    began = time.monotonic()
    machine = report.machine()
    runs: dict[str, list[report.Run]] = {name: [] for name in TARGETS}
    rate: dict[str, list[report.Run]] = {name: [] for name in RATE_TARGETS}
    with tempfile.TemporaryDirectory(prefix="orchgate-machinery-") as tmp:
        stack = Stack(Path(tmp), args.policy_rows)
        stack.write_files()
        with stack.serving():
            stack.start("nginx", [tool("nginx"), "-p", tmp, "-c", str(Path(tmp) / "nginx.conf")])
            for name in TARGETS:
                start(stack, name)
                get(url(stack, name), stack.token, 200, name)
                wrk(url(stack, name), stack.token, args.connections, 1)  # warm up
            for round_no in range(args.rounds):
                for name in TARGETS:
                    latencies, usage = measured(stack, name, partial(
                        wrk, url(stack, name), stack.token, args.connections, args.seconds))
                    runs[name].append(latency_run(latencies.checked(name), usage))
                    print(f"round {round_no + 1} {name}: "
                          f"{runs[name][-1]['requests_per_second']:,.0f} req/s", flush=True)
                for name in RATE_TARGETS:
                    latencies, usage = measured(stack, name, partial(
                        constant_rate, url(stack, name), stack.token, args.rate,
                        args.rate_seconds))
                    rate[name].append(latency_run(latencies.checked(name), usage))
                for name in RATE_TARGETS[1:]:
                    rate[name][-1]["added_p99_ms"] = round(
                        rate[name][-1]["p99_ms"] - rate["direct"][-1]["p99_ms"], 3)
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    medians = {name: report.median_run(r) for name, r in runs.items()}
    rate_medians = {name: report.median_run(r) for name, r in rate.items()}
    full: dict[str, Any] = {
        "date": date, "command": "make bench-machinery", "machine": machine,
        "settings": {"seconds": args.seconds, "rounds": args.rounds,
                     "connections": args.connections, "rate": args.rate,
                     "rate_seconds": args.rate_seconds, "policy_rows": args.policy_rows + 9},
        "elapsed_seconds": round(time.monotonic() - began, 1),
        "medians": medians, "runs": runs, "rate_medians": rate_medians, "rate_runs": rate,
    }
    report.publish(full, "machinery", markdown, SECTION, docs=not args.no_docs)
    return 0


def url(stack: Stack, name: str) -> str:
    if name == "direct":
        return f"http://127.0.0.1:{stack.ports['nginx']}{ITEM_PATH}"
    prefix = "/airflow" if name.startswith("orchgate") else ""
    return f"http://127.0.0.1:{stack.ports[name]}{prefix}{ITEM_PATH}"


def markdown(full: dict[str, Any], results_file: str) -> str:
    m, settings = full["medians"], full["settings"]
    haproxy = m["haproxy"]["requests_per_second"]
    base = m["bare_uvicorn_aiohttp"]["requests_per_second"]
    lines = [
        SECTION, "", textwrap.fill(
        f"{full['date'][:10]}, `make bench-machinery` (`benchmarks/machinery.py`, "
        f"{full['elapsed_seconds']:.0f} s; results: `{results_file}`). Same machine as above; "
        f"the servers on Python {full['machine']['python']}; "
        f"load average before the run {full['machine']['load_average_before']}. wrk, one "
        f"thread, {settings['connections']} connections, {settings['seconds']:g} s per "
        f"measurement, median of {settings['rounds']} rounds taken in turns. Bare forwarders: "
        "raw ASGI, the token verified once and then cached, the request forwarded with one "
        "client (benchmarks/bare.py). orchgate: the full pipeline of `make bench`.", 96), "",
        "| target | req/s | p50 ms | p99 ms | CPU µs/req | / HAProxy | / bare uvicorn + aiohttp |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (_, _, what) in TARGETS.items():
        r = m[name]
        lines.append(
            f"| {what} | {r['requests_per_second']:,.0f} | {r['p50_ms']:.3f} | "
            f"{r['p99_ms']:.2f} | {r['cpu_us_per_request']:.0f} | "
            f"{report.ratio(r['requests_per_second'], haproxy):.3f} | "
            f"{report.ratio(r['requests_per_second'], base):.3f} |")
    rm = full["rate_medians"]
    lines += [
        "", textwrap.fill(f"Constant offered rate: {settings['rate']:,.0f} requests/s for "
        f"{settings['rate_seconds']:g} s (benchmarks/load.py, open loop; latency from each "
        "request's due time); added p99: the target's p99 minus direct's in the same round, "
        "median over the rounds.", 96), "",
        "| target | p50 ms | p99 ms | added p99 ms | added p99 / HAProxy's | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in RATE_TARGETS:
        r = rm[name]
        what = "nginx, directly" if name == "direct" else TARGETS[name][2]
        added = r.get("added_p99_ms")
        lines.append(
            f"| {what} | {r['p50_ms']:.3f} | {r['p99_ms']:.2f} | "
            f"{'—' if added is None else f'{added:.2f}'} | "
            f"{'—' if added is None else report.ratio(added, rm['haproxy']['added_p99_ms'])} | "
            f"{r['cpu_us_per_request']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
