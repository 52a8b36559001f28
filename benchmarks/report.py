"""Medians over rounds, the ratios and targets of issue 9, and the table in docs/performance.md."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

SECTION = "## Throughput and latency — make bench"
Run = dict[str, Any]  # one measurement: numbers, and `rss_mb` (per process)


def median_run(runs: list[Run]) -> Run:
    """The median of every number over the rounds; RSS from the last round (after all)."""
    out: Run = {}
    for key, value in runs[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = round(statistics.median(r[key] for r in runs), 3)
        else:
            out[key] = value
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo")
                   if line.startswith("MemTotal")), 0)
    debian = Path("/etc/debian_version").read_text().strip() \
        if Path("/etc/debian_version").exists() else "?"
    return {
        "cpu": f"{platform.machine()}, {cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kb / 2**20:.0f} GiB",
        "os": f"Debian {debian}, Linux {platform.release()}",
        "python": interpreter(),  # orchgate's, and the bare forwarders'
        "harness_python": platform.python_version(),  # wrk's driver and the load generator
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "wrk": _version(["wrk", "--version"]),
        "load_average_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def interpreter() -> str:
    """The version and the file of the interpreter the servers under test run on."""
    from benchmarks.stack import RUNTIME

    try:
        done = subprocess.run(
            [str(RUNTIME / "python"), "-c",
             "import os, platform, sys; print(platform.python_version(), "
             "os.path.realpath(sys.executable))"],
            capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    version, _, path = done.stdout.strip().partition(" ")
    return f"{version} ({path})" if path else "?"


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip()
    found = re.search(r"\d+\.\d+(\.\d+)?", text)
    return found.group(0) if found else "?"


# -- targets --------------------------------------------------------------------------------

def targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The performance targets, each with the figure this run measured."""
    closed = report["closed_loop"]["median"]
    ratios = report["closed_loop"]["ratios"].get("c16", {})
    added = report["closed_loop"]["added_over_direct_ms"].get("c1", {}).get("orchgate", {})
    out: list[dict[str, Any]] = []

    def add(name: str, figure: float, target: str, met: bool) -> None:
        out.append({"target": name, "figure": round(figure, 3), "goal": target, "met": met})

    if "orchgate/haproxy" in ratios:
        r = ratios["orchgate/haproxy"]
        add("16 connections: orchgate 1 worker / HAProxy 1 thread (req/s)", r,
            "≥ 0.40 (stretch 0.50)", r >= 0.40)
    if "orchgate_2w/haproxy_2t" in ratios:
        r = ratios["orchgate_2w/haproxy_2t"]
        add("16 connections: orchgate 2 workers / HAProxy 2 threads (req/s)", r, "≥ 0.60",
            r >= 0.60)
    for p, limit in (("p50", 0.3), ("p99", 2.0)):
        if p in added:
            add(f"1 connection: added {p} over direct (ms)", added[p], f"≤ {limit}",
                added[p] <= limit)
    rate = report.get("fixed_rate", {}).get("added_p99_ms", {})
    if {"orchgate", "haproxy"} <= rate.keys():
        mine, native = rate["orchgate"], rate["haproxy"]
        add(f"{report['fixed_rate']['rate']:g} req/s: orchgate added p99 / HAProxy added p99",
            ratio(mine, native), "≤ 2", mine <= 2 * max(native, 0.0))
    if "orchgate_audit_on/orchgate_audit_off" in ratios:
        cost = 1 - ratios["orchgate_audit_on/orchgate_audit_off"]
        add("16 connections: audit trail cost (1 − on/off, req/s)", cost, "≤ 0.10",
            cost <= 0.10)
    listing = report.get("list", {}).get("added_ms", {})
    if "p50" in listing:
        add(f"{report['list']['items']:,}-item list filtered: added p50 (ms)", listing["p50"],
            "≤ 10", listing["p50"] <= 10)
    reload = report.get("reload") or {}
    if "added_p99_ms" in reload:
        added_p99, spread = reload["added_p99_ms"], reload["steady_p99_spread_ms"]
        add(f"policy reload at {reload['rate']:g} req/s: p99 during it − without (ms, median)",
            added_p99, f"≤ {spread:.2f} (the spread of p99 without a reload)",
            added_p99 <= spread)
    rss = [mb for level in closed.values() for name, run in level.items()
           if name.startswith("orchgate") for mb in run.get("rss_mb", [])]
    if rss:
        add("RSS per orchgate process after the runs (MB, largest)", max(rss), "≤ 120",
            max(rss) <= 120)
    return out


# -- console and markdown -------------------------------------------------------------------

RATIOS = {"orchgate/direct": "orchgate / direct", "orchgate/haproxy": "orchgate / HAProxy",
          "orchgate_2w/haproxy_2t": "2 workers / 2 threads",
          "orchgate_2w/orchgate": "orchgate 2 / 1 workers",
          "haproxy_2t/haproxy": "HAProxy 2 / 1 threads",
          "orchgate_audit_on/orchgate_audit_off": "audit on / off",
          "orchgate/orchgate_audit_on": "orchgate / its twin",
          "orchgate_reloading/orchgate": "reloading / steady"}
HEADER = ("target", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/req",
          "+nginx µs/req", "RSS MB", "errors")


def rows(report: Mapping[str, Any]) -> Iterable[tuple[str, ...]]:
    for level, runs in report["closed_loop"]["median"].items():
        for name, r in runs.items():
            yield (f"{level} {name}", f"{r['requests_per_second']:,.0f}", f"{r['p50_ms']:.3f}",
                   f"{r['p99_ms']:.2f}", f"{r['p999_ms']:.2f}",
                   f"{r['cpu_us_per_request']:.0f}", _upstream_cpu(r),
                   " + ".join(f"{mb:.0f}" for mb in r["rss_mb"]),
                   f"{r['errors'] + r['non_2xx']:.0f}")


def _upstream_cpu(r: Run) -> str:
    value = r.get("upstream_cpu_us_per_request")
    return "—" if value is None else f"{value:.0f}"


def console(report: Mapping[str, Any]) -> str:
    table = [HEADER, *rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w)
                       in enumerate(zip(row, widths, strict=True))) for row in table]
    lines += ["", *(_extra_lines(report)), "", "targets:"]
    lines += [f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['figure']} "
              f"(goal {t['goal']})" for t in report["targets"]]
    return "\n".join(lines)


def _extra_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for level, values in report["closed_loop"]["ratios"].items():
        lines.append(f"{level} ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    rate = report.get("fixed_rate")
    if rate:
        for name, r in rate["median"].items():
            lines.append(f"{rate['rate']:g} req/s {name}: achieved {r['requests_per_second']:,.0f}"
                         f" p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.2f} p99.9 {r['p999_ms']:.2f} "
                         f"ms, CPU {r['cpu_us_per_request']:.0f} µs/req, errors "
                         f"{r['errors'] + r['non_2xx']:.0f}")
        lines.append("  added p99 over direct: " + ", ".join(
            f"{k} {v:.2f} ms" for k, v in rate["added_p99_ms"].items()))
    listing = report.get("list")
    if listing:
        for name, r in listing["median"].items():
            lines.append(f"{listing['items']:,}-item list {name}: p50 {r['p50_ms']:.2f} "
                         f"p99 {r['p99_ms']:.2f} ms, {r['requests_per_second']:,.0f} req/s")
        lines.append(f"  list: added by orchgate p50 {listing['added_ms']['p50']:.2f} ms, "
                     f"p99 {listing['added_ms']['p99']:.2f} ms")
    reload = report.get("reload")
    if reload:
        med = reload["median"]
        lines.append(f"policy reload at {reload['rate']:g} req/s: p99 during "
                     f"{med['reload_p99_ms']:.2f} ms, without {med['steady_p99_ms']:.2f} ms, "
                     f"paired difference {reload['added_p99_ms']:.2f} ms (spread without "
                     f"{reload['steady_p99_spread_ms']:.2f} ms)")
    socket = report.get("socket")
    if socket:
        for name, r in socket["median"].items():
            lines.append(f"events socket {name}: {r['frames_per_second']:,.0f} frames/s, "
                         f"round trip p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.2f} ms, CPU "
                         f"{r['cpu_us_per_frame']:.0f} µs/frame")
    return lines


def markdown(report: Mapping[str, Any], results_file: str) -> str:
    m, s = report["machine"], report["settings"]
    intro = (
        f"{report['date'][:10]}, `{report['command']}` (`benchmarks/run.py`, "
        f"{report['elapsed_seconds']:.0f} s; results: `{results_file}`). Machine: {m['cpu']}, "
        f"{m['memory']}, {m['os']}, orchgate on Python {m['python']}, nginx {m['nginx']}, HAProxy "
        f"{m['haproxy']}, wrk {m['wrk']}; load average before the run "
        f"{m['load_average_before']}. The 2 cores are shared with other work: single figures "
        f"move by 10–30 % from run to run; compare the ratios within one run.")
    method = (
        f"Each figure is the median of {s['rounds']} rounds; within a round the targets run one "
        f"after another (direct, HAProxy, orchgate, …) and every round repeats that order; "
        f"ratios and added latencies are taken within each round, then their median. wrk: "
        f"one thread, {s['seconds']:g} s per measurement, a 1 KB JSON answer from nginx. "
        f"orchgate: the full pipeline (RS256 token, catalog, decision over "
        f"{s['policy_rows']:,} policy rows, audit with hash chain, signed checkpoints and "
        f"fsynced intents, per-caller Airflow credential, streaming forward). HAProxy: the same "
        f"token checked with `jwt_verify` (alg, signature, iss, aud, exp). CPU µs/req: utime + "
        f"stime of the server's own processes over the run (/proc); +nginx: the upstream's for "
        f"the same requests. RSS: each process of the server after the run (2 workers: both "
        f"workers, uvicorn's supervisor, multiprocessing's resource tracker). Options "
        f"(rounds, seconds, connections, rate): `.venv/bin/python -m benchmarks.run --help`.")
    out = [SECTION, "", textwrap.fill(intro, 95), "", textwrap.fill(method, 95), "",
           "| target | " + " | ".join(HEADER[1:]) + " |",
           "|---|" + "---:|" * (len(HEADER) - 1),
           *("| " + " | ".join(row) + " |" for row in rows(report)), ""]
    out += ["| connections | " + " | ".join(RATIOS.values()) + " |",
            "|---|" + "---:|" * len(RATIOS)]
    for level, values in report["closed_loop"]["ratios"].items():
        out.append(f"| {level[1:]} | " + " | ".join(
            f"{values[k]:.3f}" if k in values else "" for k in RATIOS) + " |")
    out.append("")
    rate = report.get("fixed_rate")
    if rate:
        out += [textwrap.fill(
            f"Constant offered rate: {rate['rate']:,.0f} requests/s for {rate['seconds']:g} s "
            f"over up to {rate['connections']} connections (open loop, benchmarks/load.py), "
            f"{rate.get('runs_per_round', 1)} runs of each target a round, alternating; "
            "latency from each request's due time, so a stall counts for every request it "
            "delayed. Added p99: the target's p99 minus direct's in the run alongside, median "
            "over the runs.", 95), "",
            "| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | added p99 ms | "
            "CPU µs/req |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in rate["median"].items():
            added = rate["added_p99_ms"].get(name)
            out.append(f"| {name} | {r['requests_per_second']:,.0f} | {r['p50_ms']:.3f} | "
                       f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
                       f"{'—' if added is None else f'{added:.2f}'} | "
                       f"{r['cpu_us_per_request']:.0f} |")
        out.append("")
    listing = report.get("list")
    if listing:
        out += [textwrap.fill(
            f"A {listing['items']:,}-DAG list at 1 connection: direct reads it from nginx in "
            f"one answer; through orchgate (`GET /airflow/api/v2/dags?limit=100`) orchgate reads "
            f"it in Airflow's pages of 100, drops the quarter the caller may not read and "
            f"answers the first 100 of the {listing['visible']:,} visible.", 95), "",
            "| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req |",
            "|---|---:|---:|---:|---:|---:|"]
        for name, r in listing["median"].items():
            out.append(f"| {name} | {r['requests_per_second']:,.0f} | {r['p50_ms']:.2f} | "
                       f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
                       f"{r['cpu_us_per_request']:,.0f} |")
        out += [f"| added by orchgate | | {listing['added_ms']['p50']:.2f} | "
                f"{listing['added_ms']['p99']:.2f} | | |", ""]
    socket = report.get("socket")
    if socket:
        out += [textwrap.fill(
            "A Prefect event stream (`/prefect/api/events/in`, `prefect` subprotocol) relayed "
            "to a stand-in Prefect server that echoes each event (benchmarks/prefect_upstream"
            ".py); orchgate parses each event, resolves its flow run (cached) and decides it. "
            "Round trip: one frame in flight; frames/s: 64 in flight.", 95), "",
            "| target | frames/s | round trip p50 ms | p99 ms | p99.9 ms | CPU µs/frame |",
            "|---|---:|---:|---:|---:|---:|"]
        for name, r in socket["median"].items():
            out.append(f"| {name} | {r['frames_per_second']:,.0f} | {r['p50_ms']:.3f} | "
                       f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['cpu_us_per_frame']:.0f} |")
        out.append("")
    reload = report.get("reload")
    if reload:
        med = reload["median"]
        out += [textwrap.fill(
            f"One policy reload at {reload['rate']:,.0f} requests/s (benchmarks/reload.py): "
            f"{len(reload['runs'])} times, {reload['run_seconds']:g} s runs, the policy file "
            "replaced by a rename 3 s in; the window runs from the rename until 0.25 s after "
            "orchgate swapped the new snapshot in (its watcher notices within a second, then "
            "builds in a thread). Compared with the same stretch of a run without a reload, "
            "right after. Medians over the reloads.", 95), "",
            "| | window s | requests | p50 ms | p99 ms | max ms | whole run p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| with a reload | {med['window_seconds']:.2f} | {med['requests_in_window']:,.0f} | "
            f"{med['reload_p50_ms']:.3f} | {med['reload_p99_ms']:.2f} | "
            f"{med['reload_max_ms']:.2f} | {med['reload_run_p99_ms']:.2f} |",
            f"| without | | | {med['steady_p50_ms']:.3f} | {med['steady_p99_ms']:.2f} | "
            f"{med['steady_max_ms']:.2f} | {med['steady_run_p99_ms']:.2f} |", "",
            textwrap.fill(
                f"Paired p99 difference (with − without), median: {reload['added_p99_ms']:.2f} "
                f"ms; p99 without a reload ranged over {reload['steady_p99_spread_ms']:.2f} ms "
                "across the runs.", 95), ""]
    out += ["| target | this run | goal | |", "|---|---:|---|---|",
            *(f"| {t['target']} | {t['figure']} | {t['goal']} | "
              f"{'met' if t['met'] else 'missed'} |" for t in report["targets"]), ""]
    return "\n".join(out)


def update_docs(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace the section under `heading` in place, or put it before the first other `## `
    section."""
    text = path.read_text()
    section = section.rstrip("\n") + "\n\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start] + (section + rest if rest else section.rstrip("\n") + "\n")
    else:
        first = text.find("\n## ")
        at = first + 1 if first >= 0 else len(text)
        text = text[:at] + section + text[at:]
    path.write_text(text)


def write_results(full: dict[str, Any], kind: str, folder: Path | None = None) -> Path:
    """benchmarks/results/<UTC date>-<kind>.json; a later run of the same day is written
    beside it (`-2`, `-3`, …), never over it."""
    folder = folder or Path(__file__).resolve().parents[1] / "benchmarks/results"
    folder.mkdir(exist_ok=True)
    stem = f"{full['date'][:10]}-{kind}"
    out, n = folder / f"{stem}.json", 1
    while out.exists():
        n += 1
        out = folder / f"{stem}-{n}.json"
    out.write_text(json.dumps(full, indent=2) + "\n")
    return out


def publish(full: dict[str, Any], kind: str, table: Callable[[dict[str, Any], str], str],
            heading: str, docs: bool = True) -> None:
    """Write a run's results (`write_results`), print its table,
    and put the table in docs/performance.md under `heading`."""
    root = Path(__file__).resolve().parents[1]
    out = write_results(full, kind)
    text = table(full, str(out.relative_to(root)))
    print(text)
    print(f"written {out.relative_to(root)} ({full['elapsed_seconds']:.0f} s)")
    if docs:
        update_docs(root / "docs/performance.md", text, heading)
        print("updated docs/performance.md")
