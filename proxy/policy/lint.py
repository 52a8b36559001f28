"""`orchgate policy check`: what Casbin would load silently but a team surely did not mean.

Errors that stop a load (unknown row types, wrong arity, trailing comments merged into
values, unknown actions, systems and effects, principals without a prefix) come from
`model.load_policy`; this adds the checks on a policy that loads: duplicate and contradictory
rows, globs that can never match, roles never granted anything, rows nobody can reach.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from proxy.policy.model import PolicySource


@dataclass(frozen=True, slots=True)
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def lint(source: PolicySource) -> list[Finding]:
    findings: list[Finding] = []
    findings += _duplicates(source)
    findings += _never_matching_globs(source)
    findings += _empty_roles(source)
    return sorted(findings, key=lambda f: _order(f.where))


def _order(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return file, int(line) if line.isdigit() else 0


def _duplicates(source: PolicySource) -> list[Finding]:
    out: list[Finding] = []
    seen: dict[tuple[str, ...], str] = {}
    by_target: dict[tuple[str, str, str, str], dict[str, str]] = defaultdict(dict)
    for rule in source.rules:
        key = (rule.sub, rule.sys, rule.obj, rule.act.label, rule.eft)
        if key in seen:
            out.append(Finding(rule.where, f"duplicate of {seen[key]}"))
            continue
        seen[key] = rule.where
        target = (rule.sub, rule.sys, rule.obj, rule.act.label)
        other = "deny" if rule.eft == "allow" else "allow"
        if other in by_target[target]:
            out.append(Finding(rule.where, f"contradicts {by_target[target][other]} (same "
                                           f"principal, system, object and action; deny wins)"))
        by_target[target][rule.eft] = rule.where
    for kind, rows in (("g", [(m.member, m.role, m.where) for m in source.memberships]),
                       ("g2", [(o.pattern, o.team + "|" + o.sys, o.where)
                               for o in source.ownerships])):
        first: dict[tuple[str, str], str] = {}
        for a, b, where in rows:
            if (a, b) in first:
                out.append(Finding(where, f"duplicate {kind} row of {first[(a, b)]}"))
            else:
                first[(a, b)] = where
    return out


def _never_matching_globs(source: PolicySource) -> list[Finding]:
    out: list[Finding] = []
    for rule in source.rules:
        if rule.obj != "*" and "*" in rule.obj:
            out.append(Finding(rule.where, f"object {rule.obj!r} is compared exactly, so its * "
                                           "never matches: own workflows with a g2 row and "
                                           "grant the team"))
    for row in source.ownerships:
        if row.sys == "prefect" and "/" not in row.pattern:
            out.append(Finding(row.where, f"{row.pattern!r} never matches a Prefect workflow "
                                          "(<flow>/<deployment>): * stays inside one segment"))
        if row.sys == "airflow" and "/" in row.pattern:
            out.append(Finding(row.where, f"{row.pattern!r} never matches an Airflow DAG id "
                                          "(they have no /)"))
        if "**" in row.pattern:
            out.append(Finding(row.where, "** means the same as *: * never crosses a /"))
    teams = {o.team for o in source.ownerships}
    for rule in source.rules:
        if rule.obj.startswith("team:") and rule.obj not in teams:
            out.append(Finding(rule.where, f"{rule.obj} owns no workflow (no g2 row names it)"))
    return out


def _empty_roles(source: PolicySource) -> list[Finding]:
    out: list[Finding] = []
    granted = {r.sub for r in source.rules}
    members: dict[str, list[str]] = defaultdict(list)
    for m in source.memberships:
        members[m.member].append(m.role)
    reported: set[str] = set()
    for m in source.memberships:
        if m.role in reported or _reaches_grant(m.role, members, granted, set()):
            continue
        reported.add(m.role)
        out.append(Finding(m.where, f"role {m.role} is never granted anything"))
    return out


def _reaches_grant(role: str, members: dict[str, list[str]], granted: set[str],
                   seen: set[str]) -> bool:
    todo = [role]
    while todo:
        name = todo.pop()
        if name in granted:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(members.get(name, ()))
    return False
