"""Decisions: the Casbin model of `policies/model.conf`, compiled into an index.

pycasbin's `enforce()` scans every row on every call and blocks the event loop (DESIGN.md §2),
so a policy is compiled once into a `PolicySnapshot` that only looks at the rows of the
request's principals, and decisions are cached per snapshot. The semantics are the model's:

- a rule applies when its system is `*` or the request's, its object is `*`, the workflow
  itself, or a team owning the workflow (`g2`, with globs), and its subject is one of the
  request's principals or a role they hold (`g`, transitively);
- allow rows grant downwards (deploy ⇒ run ⇒ read), deny rows forbid upwards;
- deny overrides allow; nothing matching means deny.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.catalog.operation import Action
from proxy.policy.model import Ownership, PolicySource, Rule

_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: Rule | None  # the rule that decided; None when nothing granted it
    generation: int
    owners: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        return "denied by rule" if self.rule is not None else "no rule grants it"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """An anchored, case-sensitive glob whose `*` stays inside one `/` segment."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


@dataclass(slots=True)
class PolicySnapshot:
    """One immutable generation of the policy, compiled; swapped whole on reload."""

    source: PolicySource
    generation: int
    _by_subject: dict[str, tuple[Rule, ...]] = field(init=False)
    _roles: dict[str, frozenset[str]] = field(init=False)
    _ownership: tuple[tuple[re.Pattern[str], Ownership], ...] = field(init=False)
    _position: dict[Rule, int] = field(init=False)
    _cache: dict[tuple[tuple[str, ...], str, str, Action], Decision] = field(init=False)

    def __post_init__(self) -> None:
        by_subject: dict[str, list[Rule]] = {}
        for rule in self.source.rules:
            by_subject.setdefault(rule.sub, []).append(rule)
        self._by_subject = {k: tuple(v) for k, v in by_subject.items()}
        self._position = {rule: i for i, rule in enumerate(self.source.rules)}
        direct: dict[str, set[str]] = {}
        for m in self.source.memberships:
            direct.setdefault(m.member, set()).add(m.role)
        self._roles = {member: frozenset(_closure(member, direct)) for member in direct}
        self._ownership = tuple((glob_regex(o.pattern), o) for o in self.source.ownerships)
        self._cache = {}

    @property
    def digest(self) -> str:
        return self.source.digest

    def owners(self, system: str, workflow: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(
            o.team for rx, o in self._ownership
            if (o.sys == "*" or o.sys == system) and rx.match(workflow)))

    def decide(self, subjects: tuple[str, ...], system: str, workflow: str,
               action: Action) -> Decision:
        key = (subjects, system, workflow, action)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        decision = self._decide(subjects, system, workflow, action)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def grants_anywhere(self, subjects: tuple[str, ...], system: str, action: Action) -> bool:
        """Whether any rule allows `action` (or more) on some workflow of `system`."""
        return any(rule.eft == "allow" and rule.act >= action and rule.sys in ("*", system)
                   for rule in self._rules_for(subjects))

    def _decide(self, subjects: tuple[str, ...], system: str, workflow: str,
                action: Action) -> Decision:
        owners = self.owners(system, workflow)
        allow: Rule | None = None
        for rule in self._rules_for(subjects):
            if rule.sys != "*" and rule.sys != system:
                continue
            if rule.obj != "*" and rule.obj != workflow and rule.obj not in owners:
                continue
            if rule.eft == "deny" and action >= rule.act:
                return Decision(False, rule, self.generation, owners)
            if rule.eft == "allow" and rule.act >= action and allow is None:
                allow = rule
        return Decision(allow is not None, allow, self.generation, owners)

    def _rules_for(self, subjects: Iterable[str]) -> list[Rule]:
        """The rules of the subjects and of every role they hold, in load order."""
        names: set[str] = set()
        for subject in subjects:
            names.add(subject)
            names |= self._roles.get(subject, frozenset())
        rules = [r for name in names for r in self._by_subject.get(name, ())]
        rules.sort(key=self._position.__getitem__)
        return rules


def _closure(member: str, direct: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(direct.get(member, ()))
    while todo:  # iterative: deep role chains must not hit the recursion limit
        role = todo.pop()
        if role not in seen:
            seen.add(role)
            todo.extend(direct.get(role, ()))
    return seen


def compile_policy(source: PolicySource, generation: int) -> PolicySnapshot:
    return PolicySnapshot(source, generation)
