"""Benchmark results: a run of the same day is written beside the earlier ones, never over; the
servers under test run on the interpreter the results name."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

from benchmarks.report import write_results

ROOT = Path(__file__).resolve().parents[2]


def test_runs_of_one_day_are_all_kept(tmp_path: Path) -> None:
    first = write_results({"date": "2026-11-25T04:00:00+00:00", "run": 1}, "proxy", tmp_path)
    second = write_results({"date": "2026-11-25T05:00:00+00:00", "run": 2}, "proxy", tmp_path)
    third = write_results({"date": "2026-11-25T06:00:00+00:00", "run": 3}, "proxy", tmp_path)
    other = write_results({"date": "2026-11-26T01:00:00+00:00", "run": 4}, "proxy", tmp_path)
    assert [p.name for p in (first, second, third, other)] == [
        "2026-11-25-proxy.json", "2026-11-25-proxy-2.json", "2026-11-25-proxy-3.json",
        "2026-11-26-proxy.json"]
    assert [json.loads(p.read_text())["run"] for p in (first, second, third, other)] == [
        1, 2, 3, 4]


def test_the_servers_under_test_run_from_the_runtime_virtualenv(tmp_path: Path) -> None:
    # `make bench` passes the virtualenv made on the image's interpreter; the results name the
    # interpreter the servers ran on, not the harness's.
    runtime = tmp_path / "runtime"
    venv.create(runtime, with_pip=False, symlinks=True)
    script = ("from benchmarks import report, stack; "
              "print(stack.RUNTIME); print(report.machine()['python'])")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**os.environ, "ORCHGATE_BENCH_RUNTIME": str(runtime)})
    bin_dir, python = done.stdout.splitlines()
    assert bin_dir == str(runtime / "bin")
    base = os.path.realpath(runtime / "bin" / "python")
    assert python == f"{platform.python_version()} ({base})"


def test_without_a_runtime_virtualenv_the_checkouts_serves() -> None:
    done = subprocess.run([sys.executable, "-c", "from benchmarks import stack; "
                           "print(stack.RUNTIME)"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True,
                          env={k: v for k, v in os.environ.items()
                               if k != "ORCHGATE_BENCH_RUNTIME"})
    assert done.stdout.strip() == str(ROOT / ".venv" / "bin")
