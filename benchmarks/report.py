"""Medians over rounds, the ratios and targets of issue 9, and the table in docs/performance.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from collections.abc import Iterable, Mapping
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
        "python": platform.python_version(),
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "wrk": _version(["wrk", "--version"]),
        "load_average_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


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
    """Issue 9's targets, each with the figure this run measured."""
    closed = report["closed_loop"]["median"]
    c1, c16 = closed.get("c1", {}), closed.get("c16", {})
    out: list[dict[str, Any]] = []

    def add(name: str, figure: float, target: str, met: bool) -> None:
        out.append({"target": name, "figure": round(figure, 3), "goal": target, "met": met})

    if {"orchgate", "haproxy"} <= c16.keys():
        r = ratio(c16["orchgate"]["requests_per_second"], c16["haproxy"]["requests_per_second"])
        add("16 connections: orchgate 1 worker / HAProxy 1 thread (req/s)", r, "≥ 0.40 "
            "(stretch 0.50)", r >= 0.40)
    if {"orchgate_2w", "haproxy_2t"} <= c16.keys():
        r = ratio(c16["orchgate_2w"]["requests_per_second"],
                  c16["haproxy_2t"]["requests_per_second"])
        add("16 connections: orchgate 2 workers / HAProxy 2 threads (req/s)", r, "≥ 0.60",
            r >= 0.60)
    if {"orchgate", "direct"} <= c1.keys():
        for p, limit in (("p50", 0.3), ("p99", 2.0)):
            added = c1["orchgate"][f"{p}_ms"] - c1["direct"][f"{p}_ms"]
            add(f"1 connection: added {p} over direct (ms)", added, f"≤ {limit}",
                added <= limit)
    rate = report.get("fixed_rate", {}).get("added_p99_ms", {})
    if {"orchgate", "haproxy"} <= rate.keys():
        mine, native = rate["orchgate"], rate["haproxy"]
        add(f"{report['fixed_rate']['rate']:g} req/s: orchgate added p99 / HAProxy added p99",
            ratio(mine, native), "≤ 2", mine <= 2 * max(native, 0.0))
    if {"orchgate", "orchgate_audit_off"} <= c16.keys():
        cost = 1 - ratio(c16["orchgate"]["requests_per_second"],
                         c16["orchgate_audit_off"]["requests_per_second"])
        add("16 connections: audit trail cost (1 − on/off, req/s)", cost, "≤ 0.10",
            cost <= 0.10)
    listing = report.get("list", {}).get("added_ms", {})
    if "p50" in listing:
        add(f"{report['list']['items']:,}-item list filtered: added p50 (ms)", listing["p50"],
            "≤ 10", listing["p50"] <= 10)
    rss = [mb for level in closed.values() for name, run in level.items()
           if name.startswith("orchgate") for mb in run.get("rss_mb", [])]
    if rss:
        add("RSS per orchgate process after the runs (MB, largest)", max(rss), "≤ 120",
            max(rss) <= 120)
    return out


# -- console and markdown -------------------------------------------------------------------

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
            lines.append(f"list {name}: p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, "
                         f"{r['requests_per_second']:,.0f} req/s")
        lines.append(f"  added: p50 {listing['added_ms']['p50']:.2f} ms, "
                     f"p99 {listing['added_ms']['p99']:.2f} ms")
    socket = report.get("socket")
    if socket:
        for name, r in socket["median"].items():
            lines.append(f"socket {name}: {r['frames_per_second']:,.0f} frames/s, round trip "
                         f"p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.2f} ms, CPU "
                         f"{r['cpu_us_per_frame']:.0f} µs/frame")
    return lines


def markdown(report: Mapping[str, Any], results_file: str) -> str:
    m = report["machine"]
    s = report["settings"]
    out = [
        SECTION, "",
        f"{report['date'][:10]}, `{report['command']}` (`benchmarks/run.py`; results: "
        f"`{results_file}`; {report['elapsed_seconds']:.0f} s). Machine: {m['cpu']}, "
        f"{m['memory']}, {m['os']}, Python {m['python']}, nginx {m['nginx']}, HAProxy "
        f"{m['haproxy']}, wrk {m['wrk']}; load average before the run {m['load_average_before']}"
        " (the 2 cores are shared: figures move by ±10–30 % from run to run, compare the ratios "
        "of one run).", "",
        f"Every figure is the median of {s['rounds']} rounds; the targets of a round run one "
        f"after another (direct, HAProxy, orchgate, …) and the rounds repeat that order. "
        f"wrk runs {s['seconds']:g} s per measurement with one thread and a 1 KB JSON answer "
        f"from nginx; orchgate runs its full pipeline (RS256 token, catalog, decision over "
        f"{s['policy_rows']:,} policy rows, audit with hash chain, checkpoints and fsynced "
        f"intents, per-caller Airflow credential, streaming forward); HAProxy checks the same "
        f"token with `jwt_verify` (alg, signature, iss, aud, exp). CPU µs/req: the server's own "
        f"processes (utime + stime from /proc over the run); +nginx: the upstream's, for the "
        f"same requests. RSS: each process of the server after the run.", "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows(report)), "",
        *(f"- {line.strip()}" for line in _extra_lines(report)), "",
        "| target (issue 9) | this run | goal | |", "|---|---:|---|---|",
        *(f"| {t['target']} | {t['figure']} | {t['goal']} | {'met' if t['met'] else 'missed'} |"
          for t in report["targets"]), "",
    ]
    return "\n".join(out)


def update_docs(path: Path, section: str) -> None:
    """Replace the section in place, or put it before the first other `## ` section."""
    text = path.read_text()
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        first = text.find("\n## ")
        at = first + 1 if first >= 0 else len(text)
        text = text[:at] + section + "\n" + text[at:]
    path.write_text(text)
