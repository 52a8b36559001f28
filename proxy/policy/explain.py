"""`orchgate policy explain`: a decision, the rule that made it, and the chain that led to it.

The chain has two halves: who (user → group → role, with the `g` rows used) and what (workflow
→ team, with the `g2` rows used, or the upstream tags when no row owns it).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from proxy.catalog.operation import Action
from proxy.policy.engine import PolicySnapshot
from proxy.policy.model import Rule


def subjects_of(principal: str, groups: list[str]) -> tuple[str, ...]:
    """A request's principals: the user or service account, then each token group."""
    return (principal, *(g if g.startswith("group:") else f"group:{g}" for g in groups if g))


def rule_text(rule: Rule) -> str:
    return f"p, {rule.sub}, {rule.sys}, {rule.obj}, {rule.act.label}, {rule.eft}"


def role_paths(snapshot: PolicySnapshot, subject: str) -> list[list[dict[str, str]]]:
    """Every role a subject holds, each with the shortest path of `g` rows that grants it."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for m in snapshot.source.memberships:
        edges.setdefault(m.member, []).append((m.role, m.where))
    paths: list[list[dict[str, str]]] = []
    queue: deque[tuple[str, list[dict[str, str]]]] = deque([(subject, [])])
    seen = {subject}
    while queue:
        name, path = queue.popleft()
        for role, where in edges.get(name, ()):
            if role in seen:
                continue
            seen.add(role)
            step = [*path, {"from": name, "to": role, "row": where}]
            paths.append(step)
            queue.append((role, step))
    return paths


def explain(snapshot: PolicySnapshot, subjects: tuple[str, ...], system: str, workflow: str,
            action: Action, tag_owners: tuple[str, ...] = ()) -> dict[str, Any]:
    decision = snapshot.decide(subjects, system, workflow, action, tag_owners)
    owners, rows = snapshot.ownership(system, workflow)
    per_subject = []
    for subject in subjects:
        effect, rule = snapshot.decide_subject(subject, system, workflow, action,
                                               decision.owners)
        per_subject.append({
            "subject": subject,
            "roles": role_paths(snapshot, subject),
            "effect": {True: "allow", False: "deny", None: "none"}[effect],
            "rule": rule.where if rule else None,
        })
    return {
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason,
        "rule": decision.rule.where if decision.rule else None,
        "rule_text": rule_text(decision.rule) if decision.rule else None,
        "subject": decision.subject,
        "request": {"subjects": list(subjects), "system": system, "workflow": workflow,
                    "action": action.label},
        "ownership": {
            "owners": list(decision.owners),
            "source": decision.owner_source if decision.owners else None,
            "rows": [{"pattern": r.pattern, "team": r.team, "system": r.sys, "row": r.where}
                     for r in rows] if owners else [],
        },
        "principals": per_subject,
        "generation": snapshot.generation,
        "digest": snapshot.digest,
    }


def render(result: dict[str, Any]) -> str:
    """The explanation for a person."""
    req = result["request"]
    lines = [f"{result['decision'].upper()}: {req['action']} on {req['system']} workflow "
             f"{req['workflow']!r} for {', '.join(req['subjects'])}"]
    if result["rule"]:
        lines.append(f"  rule      {result['rule']}: {result['rule_text']}"
                     f"  (via {result['subject']})")
    else:
        lines.append(f"  rule      none — {result['reason']}")
    own = result["ownership"]
    if own["owners"]:
        how = ", ".join(f"{r['team']} by {r['row']} ({r['pattern']})" for r in own["rows"]) \
            if own["source"] == "policy" else "upstream tags owner:<team>"
        lines.append(f"  workflow  {req['workflow']} → {', '.join(own['owners'])}  [{how}]")
    else:
        lines.append(f"  workflow  {req['workflow']} is owned by no team")
    for p in result["principals"]:
        chain = "; ".join(" → ".join([s[0]["from"], *(step["to"] for step in s)])
                          + f" ({', '.join(step['row'] for step in s)})"
                          for s in p["roles"]) or "no roles"
        lines.append(f"  principal {p['subject']}: {p['effect']}"
                     + (f" by {p['rule']}" if p["rule"] else "") + f"; roles: {chain}")
    lines.append(f"  policy    generation {result['generation']}, sha256 "
                 f"{result['digest'][:12]}")
    return "\n".join(lines)
