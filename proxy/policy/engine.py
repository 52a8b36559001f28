"""Decisions: the Casbin model of `policies/model.conf`, compiled into an index.

pycasbin's `enforce()` scans every row on every call (≈8 µs a row) and blocks the event loop
(DESIGN.md §2), so each policy generation is compiled once into a `PolicySnapshot` that looks
only at the rows that can apply: those of the request's principals and their roles, indexed by
object (`*`, the workflow itself, or an owning team). The semantics are the model's, and
`casbin.Enforcer.enforce_ex` is the reference in the property tests:

- a rule applies when its system is `*` or the request's, its object is `*`, the workflow, or a
  team owning the workflow (`g2`, globs whose `*` stays inside one `/` segment), and its
  subject is the principal or a role it holds (`g`, transitively);
- allow rows grant downwards (deploy ⇒ run ⇒ read), deny rows forbid upwards;
- per principal, as Casbin's effector reports it: the first matching deny row decides (Casbin
  stops there); else the last matching allow row (Casbin scans them all); else nothing;
- the principals of a request (the user or service account, then each group) are decided one
  by one — token groups are facts of the request, not rows — and combined deny-overrides.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.catalog.operation import Action
from proxy.policy.model import YIELD_EVERY, Ownership, PolicySource, Rule, yield_gil

_CACHE_LIMIT = 200_000
OWNER_SOURCE_POLICY = "policy"
OWNER_SOURCE_TAG = "tag"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: Rule | None  # the rule that decided; None when nothing granted it
    generation: int
    owners: tuple[str, ...] = ()
    subject: str | None = None  # the principal whose rule decided
    owner_source: str = OWNER_SOURCE_POLICY  # where `owners` came from: policy rows or tags

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        return "denied by rule" if self.rule is not None else "no rule grants it"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """An anchored, case-sensitive glob whose `*` stays inside one `/` segment."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


class _Ownership:
    """workflow → teams. Exact names by dict; globs bucketed by their literal prefix, so a
    lookup tries only the globs whose prefix the workflow starts with."""

    def __init__(self, rows: Sequence[Ownership]) -> None:
        self.exact: dict[str, list[Ownership]] = defaultdict(list)
        self.globs: dict[int, dict[str, list[tuple[re.Pattern[str], Ownership]]]] = {}
        for row in rows:
            if "*" not in row.pattern:
                self.exact[row.pattern].append(row)
                continue
            prefix = row.pattern.split("*", 1)[0]
            bucket = self.globs.setdefault(len(prefix), {})
            bucket.setdefault(prefix, []).append((glob_regex(row.pattern), row))
        self.lengths = sorted(self.globs)

    def rows_for(self, name: str) -> list[Ownership]:
        rows = list(self.exact.get(name, ()))
        for length in self.lengths:
            if length > len(name):
                break
            for rx, row in self.globs[length].get(name[:length], ()):
                if rx.match(name):
                    rows.append(row)
        return rows


def _drain(container: dict[Any, Any]) -> None:
    while container:
        for _ in range(min(len(container), YIELD_EVERY)):
            container.popitem()
        yield_gil()


@dataclass(slots=True)
class PolicySnapshot:
    """One immutable generation of the policy, compiled; swapped whole on reload."""

    source: PolicySource
    generation: int
    _roles: dict[str, tuple[str, ...]] = field(init=False)
    _index: dict[str, dict[str, list[tuple[int, Rule]]]] = field(init=False)
    _ownership: _Ownership = field(init=False)
    _owners: dict[tuple[str, str], tuple[tuple[str, ...], tuple[Ownership, ...]]] = field(
        init=False)
    _subject_cache: dict[tuple[str, str, str, Action, tuple[str, ...]],
                         tuple[bool | None, Rule | None]] = field(init=False)
    _cache: dict[tuple[tuple[str, ...], str, str, Action, tuple[str, ...]], Decision] = field(
        init=False)

    def __post_init__(self) -> None:
        direct: dict[str, set[str]] = defaultdict(set)
        for m in self.source.memberships:
            direct[m.member].add(m.role)
        self._roles = {member: (member, *sorted(_closure(member, direct))) for member in direct}
        self._index = defaultdict(lambda: defaultdict(list))
        for position, rule in enumerate(self.source.rules):
            if position % YIELD_EVERY == 0:
                yield_gil()
            self._index[rule.sub][rule.obj].append((position, rule))
        self._index = {k: dict(v) for k, v in self._index.items()}
        self._ownership = _Ownership(self.source.ownerships)
        self._owners = {}
        self._subject_cache = {}
        self._cache = {}

    @property
    def digest(self) -> str:
        return self.source.digest

    def dismantle(self) -> None:
        """Free a retired snapshot a piece at a time, yielding the GIL between pieces. Only
        once nothing else holds it (PolicyStore calls it from a worker thread): dropped whole,
        its last reference frees every rule and index entry in one uninterruptible cascade,
        a 3–4 ms stall of the event loop for 10,000 rules under load (benchmarks/reload.py).
        """
        for cache in (self._cache, self._subject_cache, self._owners):
            _drain(cache)
        for by_object in self._index.values():
            _drain(by_object)
        _drain(self._index)
        _drain(self._ownership.exact)
        rows: list[object] = [*self.source.rules, *self.source.memberships,
                              *self.source.ownerships]
        self.source = PolicySource((), (), (), self.source.digest)
        while rows:
            del rows[-YIELD_EVERY:]
            yield_gil()

    # -- ownership --------------------------------------------------------------------------

    def owners(self, system: str, workflow: str) -> tuple[str, ...]:
        return self.ownership(system, workflow)[0]

    def ownership(self, system: str, workflow: str
                  ) -> tuple[tuple[str, ...], tuple[Ownership, ...]]:
        """The teams owning a workflow by policy rows, and the rows that said so.

        Ownership is one step, workflow → team: unlike Casbin's role manager, a team is never
        itself matched against the globs (Casbin would make `team:a` owned by whoever owns
        `*`, and so hand every team's workflows to them; the property tests keep clear of it).
        """
        key = (system, workflow)
        hit = self._owners.get(key)
        if hit is not None:
            return hit
        rows = [row for row in self._ownership.rows_for(workflow) if row.sys in ("*", system)]
        teams = tuple(dict.fromkeys(row.team for row in rows))
        result = (teams, tuple(rows))
        if len(self._owners) >= _CACHE_LIMIT:
            self._owners.clear()
        self._owners[key] = result
        return result

    # -- decisions --------------------------------------------------------------------------

    def decide(self, subjects: tuple[str, ...], system: str, workflow: str, action: Action,
               tag_owners: tuple[str, ...] = ()) -> Decision:
        """Decide for the principals of one request; `tag_owners` (from upstream metadata)
        count only when no policy row owns the workflow — a policy row always wins."""
        key = (subjects, system, workflow, action, tag_owners)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        owners, source = self.owners(system, workflow), OWNER_SOURCE_POLICY
        if not owners and tag_owners:
            owners, source = tag_owners, OWNER_SOURCE_TAG
        allow: tuple[str, Rule] | None = None
        decision: Decision | None = None
        for subject in subjects:
            effect, rule = self.decide_subject(subject, system, workflow, action, owners)
            if effect is False:
                decision = Decision(False, rule, self.generation, owners, subject, source)
                break
            if effect is True and allow is None:
                assert rule is not None
                allow = (subject, rule)
        if decision is None:
            decision = Decision(allow is not None, allow[1] if allow else None, self.generation,
                                owners, allow[0] if allow else None, source)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def decide_subject(self, subject: str, system: str, workflow: str, action: Action,
                       owners: tuple[str, ...]) -> tuple[bool | None, Rule | None]:
        """One principal: (True, rule) allowed, (False, rule) denied by rule, (None, None)."""
        key = (subject, system, workflow, action, owners)
        hit = self._subject_cache.get(key)
        if hit is not None:
            return hit
        deny: tuple[int, Rule] | None = None
        allow: tuple[int, Rule] | None = None
        for position, rule in self._candidates(subject, workflow, owners):
            if rule.sys != "*" and rule.sys != system:
                continue
            if rule.eft == "deny":
                if action >= rule.act and (deny is None or position < deny[0]):
                    deny = (position, rule)
            elif rule.act >= action and (allow is None or position > allow[0]):
                allow = (position, rule)
        result: tuple[bool | None, Rule | None]
        if deny is not None:
            result = (False, deny[1])
        elif allow is not None:
            result = (True, allow[1])
        else:
            result = (None, None)
        if len(self._subject_cache) >= _CACHE_LIMIT:
            self._subject_cache.clear()
        self._subject_cache[key] = result
        return result

    def _candidates(self, subject: str, workflow: str, owners: Iterable[str]
                    ) -> Iterable[tuple[int, Rule]]:
        objects = ("*", workflow, *owners)
        for name in self._roles.get(subject, (subject,)):
            by_object = self._index.get(name)
            if by_object is None:
                continue
            for obj in objects:
                yield from by_object.get(obj, ())

    def roles(self, subject: str) -> tuple[str, ...]:
        """The subject and every role it holds (transitively)."""
        return self._roles.get(subject, (subject,))

    def grants_anywhere(self, subjects: tuple[str, ...], system: str, action: Action) -> bool:
        """Whether any rule allows `action` (or more) on some workflow of `system`."""
        for subject in subjects:
            for name in self.roles(subject):
                for rules in self._index.get(name, {}).values():
                    if any(r.eft == "allow" and r.act >= action and r.sys in ("*", system)
                           for _, r in rules):
                        return True
        return False


def _closure(member: str, direct: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(direct.get(member, ()))
    while todo:  # iterative: deep role chains must not hit the recursion limit
        role = todo.pop()
        if role not in seen and role != member:
            seen.add(role)
            todo.extend(direct.get(role, ()))
    return seen


def compile_policy(source: PolicySource, generation: int) -> PolicySnapshot:
    return PolicySnapshot(source, generation)
