"""`orchgate policy test`: policy cases in workflow terms, run through the proxy's own engine.

A test file (YAML):

    model: ../model.conf            # relative to this file; optional with --config
    policies: [../policy.csv]
    cases:
      - name: a team A reader reads team A's ETL
        principal: user:amy
        groups: [team-a-readers]
        system: airflow
        workflow: team_a_etl
        action: read
        expect: allow
        rule: policy.csv:17        # optional: the deciding rule, matched by its end

A failing case prints the explanation of the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxy.catalog.operation import Action
from proxy.policy.engine import PolicySnapshot, compile_policy
from proxy.policy.explain import explain, render, subjects_of
from proxy.policy.model import load_policy

_CASE_KEYS = {"name", "principal", "groups", "system", "workflow", "action", "expect", "rule",
              "tags"}


class PolicyTestError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: Path
    name: str
    passed: bool
    detail: str


def run_file(path: Path, snapshot: PolicySnapshot | None = None) -> list[CaseResult]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyTestError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise PolicyTestError(f"{path}: expected a mapping with a list of cases")
    if snapshot is None:
        snapshot = _snapshot_for(path, data)
    return [_run_case(path, i, case, snapshot) for i, case in enumerate(data["cases"])]


def _snapshot_for(path: Path, data: dict[str, Any]) -> PolicySnapshot:
    model, policies = data.get("model"), data.get("policies")
    if not isinstance(model, str) or not isinstance(policies, list) or not policies:
        raise PolicyTestError(f"{path}: name the model and the policies (or pass --config)")
    base = path.parent
    return compile_policy(load_policy(base / model, [base / p for p in policies]), 1)


def _run_case(path: Path, index: int, case: Any, snapshot: PolicySnapshot) -> CaseResult:
    name = f"case {index + 1}"
    if not isinstance(case, dict):
        return CaseResult(path, name, False, "a case must be a mapping")
    name = str(case.get("name", name))
    unknown = set(case) - _CASE_KEYS
    missing = {"principal", "system", "workflow", "action", "expect"} - set(case)
    if unknown or missing:
        return CaseResult(path, name, False, f"unknown keys {sorted(unknown)}; "
                                             f"missing keys {sorted(missing)}")
    try:
        action = Action.parse(str(case["action"]))
    except ValueError as exc:
        return CaseResult(path, name, False, str(exc))
    expect = str(case["expect"])
    if expect not in ("allow", "deny"):
        return CaseResult(path, name, False, f"expect must be allow or deny, not {expect!r}")
    subjects = subjects_of(str(case["principal"]), [str(g) for g in case.get("groups") or []])
    tags = tuple(f"team:{t}" for t in case.get("tags") or [])
    result = explain(snapshot, subjects, str(case["system"]), str(case["workflow"]), action,
                     tags)
    problems = []
    if result["decision"] != expect:
        problems.append(f"expected {expect}, got {result['decision']}")
    want_rule = case.get("rule")
    if want_rule is not None and not str(result["rule"] or "").endswith(str(want_rule)):
        problems.append(f"expected rule {want_rule}, got {result['rule']}")
    if problems:
        return CaseResult(path, name, False, "; ".join(problems) + "\n" + render(result))
    return CaseResult(path, name, True, "")
