"""proxy.policy: the shipped policy's decisions, load errors, and pycasbin as the oracle."""

from __future__ import annotations

import re
from pathlib import Path

import casbin
import pytest
from casbin.persist.adapters.string_adapter import StringAdapter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.catalog.operation import Action
from proxy.policy import PolicyError, PolicySnapshot, compile_policy, load_policy
from proxy.policy.engine import glob_regex

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MODEL = POLICIES / "model.conf"
POLICY = POLICIES / "policy.csv"
MODEL_TEXT = MODEL.read_text(encoding="utf-8")


def line_of(row: str) -> str:
    """`policy.csv:N` of the row with exactly this text (the example file may move rows)."""
    lines = POLICY.read_text(encoding="utf-8").splitlines()
    [number] = [i for i, line in enumerate(lines, start=1) if line.strip() == row]
    return f"{POLICY}:{number}"


@pytest.fixture(scope="module")
def shipped() -> PolicySnapshot:
    return compile_policy(load_policy(MODEL, [POLICY]), generation=7)


# Personas of the example policy: the subjects a verified token gives them.
READER = ("user:alice", "group:team-a-readers")
DEPLOYER = ("user:bob", "group:team-a-deployers")
OPERATOR = ("user:carol", "group:team-b-operators")
ADMIN = ("user:dave", "group:platform-admins")
CI_A = ("sa:ci-team-a",)
AGENT_B = ("sa:agent-team-b",)
NOBODY = ("user:eve",)
ADMIN_AND_OPERATOR = ("user:frank", "group:team-b-operators", "group:platform-admins")

R_READERS_A = "p, group:team-a-readers, *, team:a, read, allow"
R_DEPLOYER_A = "p, role:team-a-deployer, *, team:a, deploy, allow"
R_OPERATORS_B = "p, group:team-b-operators, *, team:b, run, allow"
R_AGENT_B = "p, sa:agent-team-b, *, team:b, read, allow"
R_READERS_SHARED = "p, group:team-a-readers, *, team:shared, read, allow"
R_DEPLOYERS_SHARED = "p, group:team-a-deployers, *, team:shared, read, allow"
R_OPERATORS_SHARED = "p, group:team-b-operators, *, team:shared, read, allow"
R_ADMINS = "p, group:platform-admins, *, *, admin, allow"
R_NO_HOUSEKEEPING_RUN = "p, group:team-b-operators, *, team:shared, run, deny"

READ, RUN, DEPLOY, ADMIN_ACT = Action.READ, Action.RUN, Action.DEPLOY, Action.ADMIN

# (who, system, workflow, action, allowed, deciding row or None)
CASES: list[tuple[str, tuple[str, ...], str, str, Action, bool, str | None]] = [
    ("reader reads", READER, "airflow", "team_a_etl", READ, True, R_READERS_A),
    ("reader cannot run", READER, "airflow", "team_a_etl", RUN, False, None),
    ("reader cannot deploy", READER, "airflow", "team_a_etl", DEPLOY, False, None),
    ("reader reads a prefect deployment", READER, "prefect", "team-a-etl/nightly", READ, True,
     R_READERS_A),
    ("reader cannot read team b", READER, "airflow", "team_b_ingest", READ, False, None),
    ("reader reads shared", READER, "airflow", "shared_housekeeping", READ, True,
     R_READERS_SHARED),
    ("deployer deploys (via role)", DEPLOYER, "airflow", "team_a_reporting", DEPLOY, True,
     R_DEPLOYER_A),
    ("deployer runs", DEPLOYER, "prefect", "team-a-etl/nightly", RUN, True, R_DEPLOYER_A),
    ("deployer reads", DEPLOYER, "airflow", "team_a_etl", READ, True, R_DEPLOYER_A),
    ("deployer cannot administer", DEPLOYER, "airflow", "team_a_etl", ADMIN_ACT, False, None),
    ("deployer reads shared", DEPLOYER, "prefect", "shared-cleanup/daily", READ, True,
     R_DEPLOYERS_SHARED),
    ("deployer cannot run shared", DEPLOYER, "airflow", "shared_housekeeping", RUN, False,
     None),
    ("operator runs team b", OPERATOR, "airflow", "team_b_ingest", RUN, True, R_OPERATORS_B),
    ("operator runs team b on prefect", OPERATOR, "prefect", "team-b-load/hourly", RUN, True,
     R_OPERATORS_B),
    ("operator cannot deploy team b", OPERATOR, "airflow", "team_b_ingest", DEPLOY, False, None),
    ("operator cannot run team a", OPERATOR, "airflow", "team_a_etl", RUN, False, None),
    ("operator cannot read team a", OPERATOR, "prefect", "team-a-etl/nightly", READ, False,
     None),
    ("operator reads shared", OPERATOR, "airflow", "shared_housekeeping", READ, True,
     R_OPERATORS_SHARED),
    ("deny row: operator cannot run shared", OPERATOR, "airflow", "shared_housekeeping", RUN,
     False, R_NO_HOUSEKEEPING_RUN),
    ("deny row forbids upwards", OPERATOR, "prefect", "shared-cleanup/daily", DEPLOY, False,
     R_NO_HOUSEKEEPING_RUN),
    ("deny overrides an admin grant", ADMIN_AND_OPERATOR, "airflow", "shared_housekeeping", RUN,
     False, R_NO_HOUSEKEEPING_RUN),
    ("deny row does not forbid downwards", ADMIN_AND_OPERATOR, "airflow",
     "shared_housekeeping", READ, True, R_OPERATORS_SHARED),
    ("admin administers team a", ADMIN, "airflow", "team_a_etl", ADMIN_ACT, True, R_ADMINS),
    ("admin runs shared", ADMIN, "airflow", "shared_housekeeping", RUN, True, R_ADMINS),
    ("admin deploys an unowned workflow", ADMIN, "prefect", "misc/whatever", DEPLOY, True,
     R_ADMINS),
    ("admin reads a nested prefect id", ADMIN, "prefect", "a/b/c", READ, True, R_ADMINS),
    ("service account via g role", CI_A, "airflow", "team_a_etl", DEPLOY, True, R_DEPLOYER_A),
    ("service account via g role on prefect", CI_A, "prefect", "team-a-x/prod", DEPLOY, True,
     R_DEPLOYER_A),
    ("service account is not the group", CI_A, "airflow", "shared_housekeeping", READ, False,
     None),
    ("agent reads team b", AGENT_B, "airflow", "team_b_ingest", READ, True, R_AGENT_B),
    ("agent cannot run team b", AGENT_B, "airflow", "team_b_ingest", RUN, False, None),
    ("no groups: deny", NOBODY, "airflow", "team_a_etl", READ, False, None),
    ("no subjects: deny", (), "airflow", "team_a_etl", READ, False, None),
    ("a group name is not a role name", ("group:team-a-deployer",), "airflow", "team_a_etl",
     READ, False, None),
    # Ownership globs: `*` stays inside one `/` segment, anchored, case-sensitive, per system.
    ("glob does not cross /", READER, "prefect", "team-a-etl/nightly/extra", READ, False, None),
    ("glob does not cross / in the first segment", READER, "prefect", "team-a-x/y/z", READ,
     False, None),
    ("prefect glob needs a deployment", READER, "prefect", "team-a-etl", READ, False, None),
    ("airflow glob is airflow only", READER, "prefect", "team_a_etl", READ, False, None),
    ("prefect glob is prefect only", READER, "airflow", "team-a-etl/nightly", READ, False,
     None),
    ("case-sensitive", READER, "airflow", "Team_A_etl", READ, False, None),
    ("case-sensitive upper", READER, "airflow", "TEAM_A_ETL", READ, False, None),
    ("anchored at the start", READER, "airflow", "old_team_a_etl", READ, False, None),
    ("anchored at the end (prefect)", READER, "prefect", "x-team-a-etl/nightly", READ, False,
     None),
    ("an empty glob tail matches", READER, "airflow", "team_a_", READ, True, R_READERS_A),
    ("subject names are exact", ("group:Team-A-Readers",), "airflow", "team_a_etl", READ, False,
     None),
]


@pytest.mark.parametrize(("who", "system", "workflow", "action", "allowed", "row"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_shipped_policy(shipped: PolicySnapshot, who: tuple[str, ...], system: str,
                            workflow: str, action: Action, allowed: bool, row: str | None) -> None:
    decision = shipped.decide(who, system, workflow, action)

    assert decision.allowed is allowed
    assert (decision.rule.where if decision.rule else None) == (line_of(row) if row else None)
    assert decision.generation == 7
    if decision.rule is not None:
        expected = "allow" if allowed else "deny"
        assert decision.rule.eft == expected
    assert decision.reason == ("allowed" if allowed else
                               "denied by rule" if row else "no rule grants it")


def test_the_deciding_subject_is_named(shipped: PolicySnapshot) -> None:
    denied = shipped.decide(ADMIN_AND_OPERATOR, "airflow", "shared_housekeeping", RUN)
    allowed = shipped.decide(ADMIN_AND_OPERATOR, "airflow", "team_a_etl", RUN)
    via_role = shipped.decide(CI_A, "airflow", "team_a_etl", RUN)

    assert (denied.allowed, denied.subject) == (False, "group:team-b-operators")
    assert (allowed.allowed, allowed.subject) == (True, "group:platform-admins")
    assert (via_role.allowed, via_role.subject) == (True, "sa:ci-team-a")
    assert shipped.decide(NOBODY, "airflow", "team_a_etl", READ).subject is None


@pytest.mark.parametrize(("system", "workflow", "owners"), [
    ("airflow", "team_a_etl", ("team:a",)),
    ("prefect", "team-b-load/hourly", ("team:b",)),
    ("airflow", "shared_housekeeping", ("team:shared",)),
    ("prefect", "team_a_etl", ()),
    ("airflow", "unknown", ()),
])
def test_owners(shipped: PolicySnapshot, system: str, workflow: str,
                owners: tuple[str, ...]) -> None:
    assert shipped.owners(system, workflow) == owners
    assert shipped.decide(ADMIN, system, workflow, READ).owners == owners


def test_decisions_are_cached_per_snapshot(shipped: PolicySnapshot) -> None:
    first = shipped.decide(READER, "airflow", "team_a_etl", READ)

    assert shipped.decide(READER, "airflow", "team_a_etl", READ) is first
    other = compile_policy(shipped.source, generation=8)
    assert other.decide(READER, "airflow", "team_a_etl", READ).generation == 8


def test_grants_anywhere(shipped: PolicySnapshot) -> None:
    assert shipped.grants_anywhere(READER, "airflow", READ)
    assert not shipped.grants_anywhere(READER, "airflow", RUN)
    assert shipped.grants_anywhere(CI_A, "prefect", DEPLOY)
    assert not shipped.grants_anywhere(NOBODY, "prefect", READ)


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("team_a_*", "team_a_etl", True),
    ("team_a_*", "team_a_", True),
    ("team_a_*", "xteam_a_etl", False),
    ("team_a_*", "team_a_etl/x", False),
    ("a-*/*", "a-x/prod", True),
    ("a-*/*", "a-x/y/z", False),
    ("*/prod", "x/prod", True),
    ("*/prod", "x/prod2", False),
    ("a.b", "aXb", False),  # regex metacharacters are literal
    ("a+(b)", "a+(b)", True),
    ("Etl_*", "etl_x", False),
])
def test_glob_regex(pattern: str, name: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).match(name)) is matches


# ---------------------------------------------------------------------------------------------
# Load errors: each names file:line; all are reported at once.


def load_errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "policy.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(MODEL, [path])
    return info.value.problems


@pytest.mark.parametrize(("row", "problems"), [
    ("p2, user:a, *, x, read, allow", ["unknown row type 'p2' (expected p, g or g2)"]),
    ("g3, deploy, run", ["unknown row type 'g3' (expected p, g or g2)"]),
    ("x", ["unknown row type 'x' (expected p, g or g2)"]),
    ("p, user:a, *, x, read", ["a p row has 5 values, this one has 4"]),
    ("p, user:a, *, x, read, allow, extra", ["a p row has 5 values, this one has 6"]),
    ("g, user:a", ["a g row has 2 values, this one has 1"]),
    ("g2, etl_*, team:a", ["a g2 row has 3 values, this one has 2"]),
    ("g, user:a, role:x # on call", ["'role:x # on call' contains '#': comments go on their own "
                                     "line"]),
    ("p, user:a, *, x, read, allow # why", [
        "'allow # why' contains '#': comments go on their own line",
        "unknown effect 'allow # why' (allow or deny)",
    ]),
    ("p, user:a, *, x, launch, allow", ["unknown action 'launch' (read, run, deploy, admin)"]),
    ("p, user:a, kubernetes, x, read, allow",
     ["unknown system 'kubernetes' (airflow, prefect or *)"]),
    ("p, user:a, *, x, read, permit", ["unknown effect 'permit' (allow or deny)"]),
    ("p, alice, *, x, read, allow",
     ["principal 'alice' needs a prefix: user:, group:, sa: or role:"]),
    ("p, user:, *, x, read, allow",
     ["principal 'user:' needs a prefix: user:, group:, sa: or role:"]),
    ("g, alice, role:x", ["principal 'alice' needs a prefix: user:, group:, sa: or role:"]),
    ("g, user:alice, admins", ["principal 'admins' needs a prefix: user:, group:, sa: or role:"]),
    ("g2, etl_*, a, airflow", ["owner 'a' must be team:<name>"]),
    ("g2, etl_*, team:a, dagster", ["unknown system 'dagster' (airflow, prefect or *)"]),
    ("p, user:a, *, , read, allow", ["empty value"]),
])
def test_a_bad_row_is_named_by_file_and_line(tmp_path: Path, row: str,
                                             problems: list[str]) -> None:
    text = "# a comment\n\np, user:ok, *, x, read, allow\n" + row + "\n"

    found = load_errors(tmp_path, text)

    assert found == [f"{tmp_path / 'policy.csv'}:4: {p}" for p in problems]


def test_all_problems_of_all_files_are_reported_at_once(tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text("p, alice, *, x, read, allow\ng, user:a, role:b\np, user:a, *, x, go, "
                     "allow\n", encoding="utf-8")
    second = tmp_path / "b.csv"
    second.write_text("\n\ng9, x, y\n", encoding="utf-8")
    missing = tmp_path / "missing.csv"

    with pytest.raises(PolicyError) as info:
        load_policy(MODEL, [first, second, missing])

    assert info.value.problems == [
        f"{first}:1: principal 'alice' needs a prefix: user:, group:, sa: or role:",
        f"{first}:3: unknown action 'go' (read, run, deploy, admin)",
        f"{second}:3: unknown row type 'g9' (expected p, g or g2)",
        f"{missing}: cannot read: No such file or directory",
    ]


def test_a_broken_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.conf"
    model.write_text("[request_definition]\nr = sub, obj\nthis line is no assignment\n",
                     encoding="utf-8")

    with pytest.raises(PolicyError) as info:
        load_policy(model, [POLICY])

    [problem] = info.value.problems
    assert problem.startswith(f"{model}: not a valid Casbin model")


def test_rows_keep_their_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text("# c\ng2, etl_*, team:a, *\n\n  p, user:a, prefect, team:a, run, deny\n"
                    "g, user:a, role:x\n", encoding="utf-8")

    source = load_policy(MODEL, [path])

    [rule] = source.rules
    assert (rule.sub, rule.sys, rule.obj, rule.act, rule.eft) == \
        ("user:a", "prefect", "team:a", Action.RUN, "deny")
    assert rule.where == f"{path}:4"
    assert source.ownerships[0].where == f"{path}:2"
    assert source.memberships[0].where == f"{path}:5"


def test_the_digest_follows_the_content(tmp_path: Path) -> None:
    path = tmp_path / "policy.csv"
    path.write_text("p, user:a, *, x, read, allow\n", encoding="utf-8")
    before = load_policy(MODEL, [path]).digest
    assert load_policy(MODEL, [path]).digest == before

    path.write_text("p, user:a, *, x, run, allow\n", encoding="utf-8")

    assert load_policy(MODEL, [path]).digest != before


# ---------------------------------------------------------------------------------------------
# The oracle: pycasbin 2.8.0 with the shipped model decides random policies the same way.
#
# What Casbin needs beyond model.conf:
# - the action ladder as g3 rows. `g3(p.act, r.act)` must hold iff p.act ≥ r.act; Casbin's
#   role links are transitive and every name links to itself, so three rows suffice.
# - g2 globs: a matching function (`*` inside one `/` segment, anchored, case-sensitive) and a
#   domain matching function so that a g2 row with system `*` applies to every system.
# - per-subject questions: Casbin knows one `r.sub`; a request's subjects (a user and its
#   groups) are asked one by one and combined with deny-overrides, as DESIGN.md §3 says.
#   `enforce_ex` tells an explicit deny (False with a rule) from "nobody granted it" (False,
#   []). pycasbin 2.8.0 names the *first* matching deny row (it stops there) but the *last*
#   matching allow row (it scans every row while no deny is found); the engine reports the
#   same rows. Over subjects: the first subject (in request order) denied by a rule decides;
#   else the first one allowed; else nothing granted it.
#
# One deliberate difference, kept out of the generator: ownership is one level in orchgate
# (a workflow is owned by the teams whose pattern matches it). Casbin's role manager applies
# g2 patterns to every name it holds, team names included: with `g2, *, team:b, …`, the name
# `team:a` matches `*`, so every workflow team:a owns would also become team:b's — even a
# Prefect `flow/deployment` id that `*` itself cannot match. Team names are owners, never
# workflow ids, so the generated patterns never match a `team:` name (no bare `*`);
# `test_ownership_is_not_transitive` shows the difference.

LADDER = "g3, admin, deploy\ng3, deploy, run\ng3, run, read\n"
ACTIONS = ("read", "run", "deploy", "admin")
USERS = ("user:u1", "user:u2", "sa:s1")
GROUPS = ("group:g1", "group:g2")
ROLES = ("role:r1", "role:r2")
TEAMS = ("team:x", "team:y")
SYSTEMS = ("airflow", "prefect")
# Airflow dag ids never hold a `/`; Prefect ids are `flow/deployment`. Both kinds are asked of
# both systems all the same: the engine must not rely on it.
WORKFLOWS = ("etl_a", "etl_b", "report", "a_etl", "a-x/prod", "a-y/dev", "b-x/prod",
             "etl_a/prod", "a-x/prod/extra")
PATTERNS = ("etl_*", "etl_a", "*_a", "a-*/*", "a-x/*", "*/prod", "*/*", "b-x/prod", "report",
            "*-x/*", "etl_*/prod", "a-*")


def casbin_glob(name: str, pattern: str) -> bool:
    return re.fullmatch("[^/]*".join(map(re.escape, pattern.split("*"))), name) is not None


def casbin_domain(request_system: str, row_system: str) -> bool:
    return row_system in ("*", request_system)


def enforcer(rows: list[str]) -> casbin.Enforcer:
    e = casbin.Enforcer(casbin.Enforcer.new_model(text=MODEL_TEXT),
                        StringAdapter(LADDER + "".join(f"{r}\n" for r in rows)))
    e.add_named_matching_func("g2", casbin_glob)
    e.add_named_domain_matching_func("g2", casbin_domain)
    return e


def test_the_oracle_ladder_is_the_action_ladder() -> None:
    e = enforcer([])
    for granted in ACTIONS:
        for asked in ACTIONS:
            g3 = e.rm_map["g3"].has_link(granted, asked)
            assert g3 is (Action.parse(granted) >= Action.parse(asked)), (granted, asked)


def test_ownership_is_not_transitive(tmp_path: Path) -> None:
    rows = ["g2, a-*/*, team:a, prefect", "g2, *, team:b, *",
            "p, user:u, *, team:b, read, allow"]
    path = tmp_path / "policy.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    snapshot = compile_policy(load_policy(MODEL, [path]), 1)

    # orchgate: `*` does not match `a-x/prod` (it has a `/`), so team:b does not own it.
    assert snapshot.owners("prefect", "a-x/prod") == ("team:a",)
    assert not snapshot.decide(("user:u",), "prefect", "a-x/prod", READ).allowed
    # Casbin chains a-x/prod → team:a → (team:a matches `*`) → team:b.
    assert enforcer(rows).enforce("user:u", "prefect", "a-x/prod", "read") is True


P_ROW = st.tuples(
    st.sampled_from(USERS + GROUPS + ROLES),
    st.sampled_from((*SYSTEMS, "*")),
    st.sampled_from((*WORKFLOWS, *TEAMS, *TEAMS, "*")),
    st.sampled_from(ACTIONS),
    st.sampled_from(("allow", "allow", "deny")),
).map(lambda v: "p, " + ", ".join(v))
G_ROW = st.tuples(
    st.sampled_from(USERS + GROUPS + ROLES),
    st.sampled_from(GROUPS + ROLES),
).map(lambda v: "g, " + ", ".join(v))
G2_ROW = st.tuples(
    st.sampled_from(PATTERNS),
    st.sampled_from(TEAMS),
    st.sampled_from((*SYSTEMS, "*")),
).map(lambda v: "g2, " + ", ".join(v))
ROWS = st.tuples(
    st.lists(P_ROW, min_size=1, max_size=10),
    st.lists(st.one_of(G_ROW, G2_ROW, G2_ROW), min_size=1, max_size=8),
).flatmap(lambda parts: st.permutations(parts[0] + parts[1]))
SUBJECTS = st.tuples(
    st.sampled_from(USERS),
    st.lists(st.sampled_from(GROUPS), unique=True, max_size=2),
).map(lambda v: (v[0], *v[1]))
REQUEST = st.tuples(SUBJECTS, st.sampled_from(SYSTEMS), st.sampled_from(WORKFLOWS),
                    st.sampled_from(ACTIONS))
Request = tuple[tuple[str, ...], str, str, str]


def p_values(row: str) -> tuple[str, ...]:
    return tuple(row.split(", ")[1:])


@st.composite
def policies_and_requests(draw: st.DrawFn) -> tuple[list[str], list[Request]]:
    """A random policy and requests, half of them aimed at one of its p rows (its subject,
    system, an action it covers, and its workflow or one its team owns), so that many meet a
    rule: about a quarter of the decisions are allowed, one in ten is denied by a rule."""
    rows = draw(ROWS)
    p_rows = [p_values(r) for r in rows if r.startswith("p, ")]
    g2_rows = [p_values(r) for r in rows if r.startswith("g2, ")]
    requests: list[Request] = []
    for _ in range(draw(st.integers(min_value=4, max_value=8))):
        subjects, system, workflow, action = draw(REQUEST)
        aimed: bool = draw(st.booleans())
        if p_rows and aimed:
            sub, sys, obj, act, eft = draw(st.sampled_from(p_rows))
            rank = ACTIONS.index(act)
            action = draw(st.sampled_from(ACTIONS[:rank + 1] if eft == "allow"
                                          else ACTIONS[rank:]))
            if sub.startswith("group:") and sub not in subjects:
                subjects = (*subjects, sub)
            elif sub.startswith(("user:", "sa:")):
                subjects = (sub, *subjects[1:])
            system = system if sys == "*" else sys
            owned = [w for pattern, team, _sys in g2_rows if team == obj
                     for w in WORKFLOWS if casbin_glob(w, pattern)]
            workflow = obj if obj in WORKFLOWS else draw(st.sampled_from(owned or WORKFLOWS))
        requests.append((subjects, system, workflow, action))
    return rows, requests


def oracle(e: casbin.Enforcer, subjects: tuple[str, ...], system: str, workflow: str,
           action: str) -> tuple[bool, tuple[str, ...] | None, str | None]:
    """Casbin's decision, deny-overrides over the subjects: (allowed, row, deciding subject)."""
    allow: tuple[tuple[str, ...], str] | None = None
    for subject in subjects:
        allowed, rule = e.enforce_ex(subject, system, workflow, action)
        if not allowed and rule:
            return False, tuple(rule), subject
        if allowed and allow is None:
            assert rule
            allow = (tuple(rule), subject)
    return (True, *allow) if allow else (False, None, None)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oracle")


# 3,000 policies × 4–8 requests each: at least 12,000 decisions compared with Casbin.
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=policies_and_requests())
def test_the_engine_decides_like_casbin(
        oracle_dir: Path, case: tuple[list[str], list[Request]]) -> None:
    rows, requests = case
    path = oracle_dir / "policy.csv"
    path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
    snapshot = compile_policy(load_policy(MODEL, [path]), 1)
    lines = {i: p_values(r) for i, r in enumerate(rows, start=1) if r.startswith("p, ")}
    e = enforcer(rows)

    for request in requests:
        subjects, system, workflow, action = request
        decision = snapshot.decide(subjects, system, workflow, Action.parse(action))
        allowed, row, subject = oracle(e, subjects, system, workflow, action)

        assert decision.allowed is allowed, request
        assert decision.subject == subject, request
        if row is None:
            assert decision.rule is None, request
            continue
        # Casbin returns the row's values; identical rows match alike, so the deny Casbin
        # stopped at is the first of its copies and the allow it ended on the last.
        copies = [n for n, values in lines.items() if values == row]
        expected = copies[-1] if allowed else copies[0]
        assert decision.rule is not None, request
        assert decision.rule.where == f"{path}:{expected}", request
