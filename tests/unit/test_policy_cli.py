"""`orchgate policy check | explain | test` on the shipped examples and on broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from proxy.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "policies/model.conf"
POLICY = ROOT / "policies/policy.csv"


def files(*policies: Path) -> list[str]:
    args = ["--model", str(MODEL)]
    for p in policies:
        args += ["--policy", str(p)]
    return args


def test_the_shipped_policy_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", *files(POLICY)]) == 0
    assert capsys.readouterr().out.startswith("ok: 9 rules")


def test_the_shipped_policy_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    tests = sorted((ROOT / "policies/tests").glob("*.yaml"))
    assert tests
    assert main(["policy", "test", *map(str, tests)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("16 passed, 0 failed")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("rows", "message"), [
    ("p, group:a, *, team:a, read, allow\np, group:a, *, team:a, read, allow\n"
     "g2, a_*, team:a, airflow\n", "policy.csv:2: duplicate of"),
    ("p, group:a, *, team:a, read, allow\np, group:a, *, team:a, read, deny\n"
     "g2, a_*, team:a, airflow\n", "policy.csv:2: contradicts"),
    ("p, group:a, *, etl_*, read, allow\n", "policy.csv:1: object 'etl_*' is compared exactly"),
    ("p, group:a, *, team:a, read, allow\ng2, etl_*, team:a, prefect\n",
     "policy.csv:2: 'etl_*' never matches a Prefect workflow"),
    ("p, group:a, *, team:a, read, allow\ng2, a/*, team:a, airflow\n",
     "policy.csv:2: 'a/*' never matches an Airflow DAG id"),
    ("p, group:a, *, team:a, read, allow\ng2, a_*, team:a, airflow\n"
     "g, group:b, role:nothing\n", "policy.csv:3: role role:nothing is never granted anything"),
    ("p, group:a, *, team:x, read, allow\n", "policy.csv:1: team:x owns no workflow"),
    ("p, group:a, *, team:a, read, allow # comment\n", "policy.csv:1: 'allow # comment'"),
    ("q, group:a, *, team:a, read, allow\n", "policy.csv:1: unknown row type 'q'"),
    ("p, alice, *, team:a, read, allow\n", "policy.csv:1: principal 'alice' needs a prefix"),
    ("p, group:a, *, team:a, write, allow\n", "policy.csv:1: unknown action 'write'"),
    ("p, group:a, *, team:a, RUN, allow\n", "policy.csv:1: unknown action 'RUN'"),
    ("p, group:a, *, team:a, read\n", "policy.csv:1: a p row has 5 values, this one has 4"),
])
def test_check_names_each_problem_by_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str, message: str) -> None:
    assert main(["policy", "check", *files(write(tmp_path, rows))]) == 1
    assert message in capsys.readouterr().err


def test_explain_shows_the_rule_and_the_chain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", *files(POLICY), "--principal", "user:alice", "--groups",
                 "team-a-deployers", "--system", "airflow", "--workflow", "team_a_etl",
                 "--action", "deploy", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decision"] == "allow"
    assert result["rule"].endswith("policy.csv:16")
    assert result["subject"] == "group:team-a-deployers"
    assert result["ownership"]["owners"] == ["team:a"]
    assert result["ownership"]["rows"][0]["row"].endswith("policy.csv:7")
    roles = result["principals"][1]["roles"]
    assert roles == [[{"from": "group:team-a-deployers", "to": "role:team-a-deployer",
                       "row": f"{POLICY}:17"}]]


def test_explain_for_people_names_the_deny(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", *files(POLICY), "--principal", "user:bob", "--groups",
                 "team-b-operators,platform-admins", "--system", "prefect", "--workflow",
                 "shared-housekeeping/daily", "--action", "run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DENY: run on prefect workflow 'shared-housekeeping/daily'")
    assert "policy.csv:33: p, group:team-b-operators, *, team:shared, run, deny" in out


def test_a_failing_policy_test_prints_the_explanation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(MODEL, tmp_path / "model.conf")
    shutil.copy(POLICY, tmp_path / "policy.csv")
    (tmp_path / "t.yaml").write_text("""
model: model.conf
policies: [policy.csv]
cases:
  - name: wrong on purpose
    principal: user:amy
    groups: [team-a-readers]
    system: airflow
    workflow: team_a_etl
    action: run
    expect: allow
""", encoding="utf-8")
    assert main(["policy", "test", str(tmp_path / "t.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "expected allow, got deny" in out
    assert "DENY: run on airflow workflow 'team_a_etl'" in out
    assert out.strip().endswith("0 passed, 1 failed")


def test_a_test_file_with_no_cases_fails(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("cases: []\n", encoding="utf-8")
    assert main(["policy", "test", *files(POLICY), str(tmp_path / "t.yaml")]) == 1
