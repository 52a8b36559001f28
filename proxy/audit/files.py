"""Reading the trail back: the live file and its rotated siblings, line by line, streamed.

A rotated file is named `<live name>.<UTC time>` (`audit.jsonl.20261124T101500Z`, with `-2`,
`-3`, … if that name is taken). Files are ordered by the `seq` of their first record, so a
reader never depends on names or modification times.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

TAIL_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Line:
    path: Path
    number: int  # 1-based
    record: dict[str, Any] | None  # None: not a JSON object
    last: bool  # the file's last line
    terminated: bool  # ends with a newline


def rotated_name(live: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = live.with_name(f"{live.name}.{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = live.with_name(f"{live.name}.{stamp}-{n}")
    return candidate


def siblings(live: Path) -> list[Path]:
    """The rotated files of a live file (not the live file itself)."""
    if not live.parent.is_dir():
        return []
    prefix = live.name + "."
    return [p for p in live.parent.iterdir()
            if p.name.startswith(prefix) and p.name[len(prefix):len(prefix) + 1].isdigit()]


def trail_files(paths: Iterable[Path]) -> list[Path]:
    """The given files plus the rotated siblings of each, in chain order, once each."""
    found: dict[Path, None] = {}
    for path in paths:
        for p in [*siblings(path), path]:
            if p.is_file():
                found[p.resolve()] = None
    return sorted(found, key=_first_seq)


def _first_seq(path: Path) -> int:
    for line in lines(path):
        if line.record is not None and isinstance(line.record.get("seq"), int):
            seq: int = line.record["seq"]
            return seq
    return 0


def lines(path: Path) -> Iterator[Line]:
    with path.open("rb") as f:
        number = 0
        pending = f.readline()
        while pending:
            number += 1
            following = f.readline()
            terminated = pending.endswith(b"\n")
            yield Line(path, number, _parse(pending), not following, terminated)
            pending = following


def records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every complete record of the trail, in order (torn or foreign lines skipped)."""
    for path in trail_files(paths):
        for line in lines(path):
            if line.record is not None:
                yield line.record


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def last_record(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """(the file's last complete record, whether the file ends in a torn line), reading only
    its tail."""
    size = path.stat().st_size
    if size == 0:
        return None, False
    with path.open("rb") as f:
        chunk = TAIL_CHUNK
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read(size - start)
            parts = data.split(b"\n")
            torn = parts[-1] != b""
            complete = parts[:-1] if start == 0 else parts[1:-1]
            for raw in reversed(complete):
                record = _parse(raw)
                if record is not None:
                    return record, torn
            if start == 0:
                return None, torn
            chunk *= 4


def fsync_dir(path: Path) -> None:
    """A rename or a new file survives a crash only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
