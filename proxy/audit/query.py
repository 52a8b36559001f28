"""`orchgate audit query` and `orchgate audit lineage`: reading the trail, streamed.

Both read the live file and its rotated siblings in chain order (audit/files.py), one record
at a time: a query prints each match as it is read, whatever the size of the trail.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

import orjson

from proxy.audit.files import records

COLUMNS = ("time", "request_id", "principal", "system", "operation", "action", "workflows",
           "decision", "rule", "status", "created", "parent")


@dataclass(frozen=True, slots=True)
class Filter:
    principal: str | None = None  # sub, client id, or user:<sub> / sa:<client_id>; globs
    workflow: str | None = None  # a workflow id or glob
    system: str | None = None
    action: str | None = None
    decision: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    event: str = "request"  # or intent, checkpoint, start, * (all)

    def matches(self, r: dict[str, Any]) -> bool:
        if self.event != "*" and r.get("event") != self.event:
            return False
        if self.system and r.get("system") != self.system:
            return False
        if self.action and r.get("action") != self.action:
            return False
        if self.decision and r.get("decision") != self.decision:
            return False
        if self.principal and not any(fnmatchcase(name, self.principal)
                                      for name in principal_names(r)):
            return False
        if self.workflow and not any(fnmatchcase(str(w), self.workflow)
                                     for w in r.get("workflows") or ()):
            return False
        if self.since or self.until:
            when = parse_time(str(r.get("time", "")))
            if when is None or (self.since and when < self.since) or (
                    self.until and when >= self.until):
                return False
        return True


def principal_names(r: dict[str, Any]) -> list[str]:
    p = r.get("principal")
    if not isinstance(p, dict):
        return []
    names = [str(p.get("sub"))]
    if p.get("kind") == "service" and p.get("client_id"):
        names += [str(p["client_id"]), f"sa:{p['client_id']}"]
    else:
        names.append(f"user:{p.get('sub')}")
    return names


def principal_label(r: dict[str, Any]) -> str:
    names = principal_names(r)
    return names[-1] if names else "-"


def parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 time (naive means UTC), or an age: `90s`, `15m`, `2h`, `7d` ago."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def query(paths: Iterable[Path], where: Filter) -> Iterator[dict[str, Any]]:
    return (r for r in records(paths) if where.matches(r))


def row(r: dict[str, Any]) -> dict[str, str]:
    created = r.get("created") or {}
    parent = r.get("parent") or {}
    return {
        "time": str(r.get("time", "")),
        "request_id": str(r.get("request_id") or ""),
        "principal": principal_label(r),
        "system": str(r.get("system") or ""),
        "operation": str(r.get("operation") or ""),
        "action": str(r.get("action") or ""),
        "workflows": " ".join(map(str, r.get("workflows") or ())),
        "decision": str(r.get("decision") or ""),
        "rule": str(r.get("rule") or ""),
        "status": "" if r.get("status") is None else str(r.get("status")),
        "created": " ".join(f"{c['system']}:{c['id']}" for c in created.get("runs", ())),
        "parent": str(parent.get("run") or ""),
    }


def write(rows: Iterable[dict[str, Any]], fmt: str, out: IO[str] = sys.stdout) -> int:
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(row(r))
            n += 1
    elif fmt == "json":  # JSON lines: the records as they are in the trail
        for r in rows:
            out.write(orjson.dumps(r).decode() + "\n")
            n += 1
    else:
        widths = {"time": 23, "request_id": 8, "principal": 18, "system": 7,
                  "operation": 24, "action": 6, "workflows": 24, "decision": 5, "rule": 24,
                  "status": 6}
        shown = [c for c in COLUMNS if c in widths]
        out.write("  ".join(c.upper().ljust(widths[c]) for c in shown) + "\n")
        for r in rows:
            cells = row(r)
            out.write("  ".join(cells[c][:widths[c]].ljust(widths[c]) for c in shown)
                      .rstrip() + "\n")
            n += 1
    out.flush()
    return n


# -- lineage -------------------------------------------------------------------------------


def lineage(paths: Iterable[Path], run: str) -> list[dict[str, Any]]:
    """The records that created `run` and each of its ancestors, the first (human) first.

    `run` is `prefect:<flow_run_id>`, `airflow:<dag_id>/<run_id>`, or a bare id of either.
    """
    created_by: dict[str, dict[str, Any]] = {}
    for r in records(paths):
        if r.get("event") != "request":
            continue
        for c in (r.get("created") or {}).get("runs", ()):
            created_by[f"{c['system']}:{c['id']}"] = r
    key = _find(created_by, run)
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while key is not None and key in created_by and key not in seen:
        seen.add(key)
        r = created_by[key]
        chain.append({"run": key, "record": r})
        parent = r.get("parent")
        key = str(parent["run"]) if isinstance(parent, dict) and parent.get("run") else None
    if key is not None and key not in created_by:
        chain.append({"run": key, "record": None})  # created out of orchgate's sight
    chain.reverse()
    return chain


def _find(created_by: dict[str, dict[str, Any]], run: str) -> str | None:
    if run in created_by:
        return run
    return next((k for k in created_by if k.split(":", 1)[1] == run
                 or k.endswith("/" + run)), None)


def render_lineage(chain: list[dict[str, Any]]) -> str:
    out = []
    for depth, link in enumerate(chain):
        r = link["record"]
        indent = "  " * depth + ("└─ " if depth else "")
        if r is None:
            out.append(f"{indent}{link['run']} (not created through orchgate)")
            continue
        p = r.get("principal") or {}
        who = principal_label(r)
        kind = "human" if p.get("kind") == "user" else "machine"
        out.append(f"{indent}{who} ({kind}) created {link['run']} "
                   f"[{' '.join(r.get('workflows') or ())}] at {r.get('time')} "
                   f"(request {r.get('request_id')}, seq {r.get('seq')})")
    return "\n".join(out)
