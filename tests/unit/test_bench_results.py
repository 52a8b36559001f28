"""Benchmark results: a run of the same day is written beside the earlier ones, never over."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import write_results


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
