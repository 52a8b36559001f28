"""Policy files → typed rows with their file:line, checked against the Casbin model.

Casbin (pycasbin 2.x) reads the model so that a broken `model.conf` is caught at load, and is
the reference semantics in the tests; the rows themselves are parsed here, because Casbin's
file adapter silently drops rows of an unknown type and keeps a trailing `# comment` as part
of the last value (DESIGN.md §3).
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import casbin

from proxy.catalog.operation import Action

SYSTEMS = ("airflow", "prefect", "*")
EFFECTS = ("allow", "deny")
PRINCIPAL_PREFIXES = ("user:", "group:", "sa:", "role:")
_ARITY = {"p": 5, "g": 2, "g2": 3}
YIELD_EVERY = 100  # rows between yields of the GIL


def yield_gil() -> None:
    """Let other threads run. A reload builds its snapshot in a worker thread, and a Python
    thread keeps the GIL for up to 5 ms at a time (sys.getswitchinterval): yielding often
    keeps the event loop's requests from waiting behind a large policy's compile."""
    time.sleep(0.0002)


class PolicyError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Rule:
    """A permission row: `p, sub, sys, obj, act, eft`."""

    sub: str
    sys: str
    obj: str
    act: Action
    eft: str
    where: str  # "policies/policy.csv:12"


@dataclass(frozen=True, slots=True)
class Membership:
    """A role row: `g, member, role`."""

    member: str
    role: str
    where: str


@dataclass(frozen=True, slots=True)
class Ownership:
    """An ownership row: `g2, workflow-or-glob, team:<name>, system-or-*`."""

    pattern: str
    team: str
    sys: str
    where: str


@dataclass(frozen=True, slots=True)
class PolicySource:
    rules: tuple[Rule, ...]
    memberships: tuple[Membership, ...]
    ownerships: tuple[Ownership, ...]
    digest: str  # sha256 over the model and every policy file, in order


def load_policy(model: Path, files: tuple[Path, ...] | list[Path]) -> PolicySource:
    problems: list[str] = []
    digest = hashlib.sha256()
    try:
        model_text = model.read_text(encoding="utf-8")
        casbin.Enforcer.new_model(text=model_text)
        digest.update(model_text.encode())
    except Exception as exc:  # Casbin raises bare Exceptions for model syntax errors.
        raise PolicyError([f"{model}: not a valid Casbin model: {exc}"]) from None
    rules: list[Rule] = []
    memberships: list[Membership] = []
    ownerships: list[Ownership] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        digest.update(b"\0" + str(path).encode() + b"\0" + text.encode())
        for count, (lineno, (kind, values, row_problems)) in enumerate(_rows(text)):
            if count % YIELD_EVERY == 0:
                yield_gil()
            where = f"{path}:{lineno}"
            if row_problems:
                problems.extend(f"{where}: {p}" for p in row_problems)
                continue
            if kind == "p":
                rules.append(Rule(values[0], values[1], values[2], Action.parse(values[3]),
                                  values[4], where))
            elif kind == "g":
                memberships.append(Membership(values[0], values[1], where))
            else:
                ownerships.append(Ownership(values[0], values[1], values[2], where))
    if problems:
        raise PolicyError(problems)
    return PolicySource(tuple(rules), tuple(memberships), tuple(ownerships), digest.hexdigest())


# A row's text → (kind, values, problems). Rows are parsed and checked once: a reload after
# an edit parses only the rows that changed (a third of a 10,000-row build's time otherwise).
Parsed = tuple[str, list[str], list[str]]
_PARSED: dict[str, Parsed] = {}
_PARSED_LIMIT = 200_000


def _rows(text: str) -> list[tuple[int, Parsed]]:
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if lineno % YIELD_EVERY == 0:
            yield_gil()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parsed = _PARSED.get(stripped)
        if parsed is None:
            fields = [f.strip() for f in next(csv.reader([stripped], skipinitialspace=True))]
            parsed = (fields[0], fields[1:], _check_row(fields))
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            _PARSED[stripped] = parsed
        out.append((lineno, parsed))
    return out


def _check_row(fields: list[str]) -> list[str]:
    kind = fields[0]
    if kind not in _ARITY:
        return [f"unknown row type {kind!r} (expected p, g or g2)"]
    values = fields[1:]
    if len(values) != _ARITY[kind]:
        return [f"a {kind} row has {_ARITY[kind]} values, this one has {len(values)}"]
    problems = []
    for value in values:
        if "#" in value:
            problems.append(f"{value!r} contains '#': comments go on their own line")
        if not value:
            problems.append("empty value")
    if kind == "p":
        sub, sys, _obj, act, eft = values
        problems += _check_principal(sub)
        if sys not in SYSTEMS:
            problems.append(f"unknown system {sys!r} (airflow, prefect or *)")
        if act not in ("read", "run", "deploy", "admin"):  # Casbin compares them as written
            problems.append(f"unknown action {act!r} (read, run, deploy, admin)")
        if eft not in EFFECTS:
            problems.append(f"unknown effect {eft!r} (allow or deny)")
    elif kind == "g":
        problems += _check_principal(values[0]) + _check_principal(values[1])
    else:
        if not values[1].startswith("team:"):
            problems.append(f"owner {values[1]!r} must be team:<name>")
        if values[2] not in SYSTEMS:
            problems.append(f"unknown system {values[2]!r} (airflow, prefect or *)")
    return problems


def _check_principal(value: str) -> list[str]:
    if not value.startswith(PRINCIPAL_PREFIXES) or value.endswith(":"):
        return [f"principal {value!r} needs a prefix: user:, group:, sa: or role:"]
    return []
