"""Airflow: DAGs found in bodies and by lookup, many-DAG requests, secrets, run notes."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any, cast

import orjson
import pytest

from proxy.airflow import many
from proxy.airflow.redaction import MASK, redact
from proxy.airflow.stamping import NOTE_LIMIT, stamp
from proxy.catalog import airflow, prefect
from proxy.catalog.operation import Action, Operation, Scope
from proxy.context import RequestContext
from proxy.errors import Reject
from proxy.listing import AnyOf, readable
from proxy.resolve.airflow import (
    EVERYTHING,
    AirflowLookups,
    AirflowResolver,
    DagIndex,
    bulk_entities,
    clear_entities,
)
from proxy.upstream.forward import Upstream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


DAGS = [
    {"dag_id": "team_a_etl", "bundle_name": "dags-folder", "relative_fileloc": "a.py",
     "tags": [{"name": "team-a", "dag_id": "team_a_etl"}, {"name": "etl", "dag_id": "x"}]},
    {"dag_id": "team_a_reporting", "bundle_name": "dags-folder", "relative_fileloc": "a.py",
     "tags": [{"name": "team-a", "dag_id": "team_a_reporting"}]},
    {"dag_id": "team_b_ingest", "bundle_name": "dags-folder", "relative_fileloc": "b.py",
     "tags": [{"name": "team-b", "dag_id": "team_b_ingest"}, {"name": "etl", "dag_id": "y"}]},
]


class FakeAirflow:
    """Stands in for Upstream.get_json: answers GETs from a dict, records every call."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def get_json(self, path: bytes, headers: list[tuple[bytes, bytes]],
                       method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
        text = path.decode()
        self.calls.append(text)
        assert dict(headers)[b"authorization"] == b"Bearer lookup"
        if text.startswith("/api/v2/dags?"):
            offset = int(text.split("offset=")[1].split("&")[0])
            return 200, {"dags": DAGS[offset:offset + 100], "total_entries": len(DAGS)}
        return self.answers.get(text, (404, {"detail": "nope"}))


def lookups(answers: dict[str, tuple[int, Any]] | None = None
            ) -> tuple[AirflowLookups, FakeAirflow]:
    fake = FakeAirflow(answers or {})
    return AirflowLookups(cast(Upstream, fake), lambda: b"Bearer lookup", ttl=60), fake


def op(name: str) -> Operation:
    return next(o for o in airflow.CATALOG.operations if o.name == name)


def ctx_for(name: str, query: bytes = b"", body: Any = None) -> RequestContext:
    ctx = RequestContext("req-1", op(name).method, "/airflow/api/v2/x", query, "127.0.0.1", "t")
    ctx.operation = op(name)
    ctx.action = op(name).action
    ctx.json = body
    return ctx


def token(payload: dict[str, str], compressed: bool = False) -> str:
    raw = json.dumps(payload).encode()
    if compressed:
        raw = zlib.compress(raw)
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return ("." if compressed else "") + b64 + ".c2lnbmF0dXJl"


# -- the catalog ---------------------------------------------------------------------------


def test_the_catalog_has_128_operations_with_unique_names_and_routes() -> None:
    ops = airflow.CATALOG.operations
    assert len(ops) == 128
    assert len({o.name for o in ops}) == 128
    assert len({(o.method, o.template) for o in ops}) == 128


@pytest.mark.parametrize(("name", "action", "scope"), [
    ("get_dags", Action.READ, Scope.LIST),
    ("trigger_dag_run", Action.RUN, Scope.PATH),
    ("patch_dags", Action.RUN, Scope.QUERY),
    ("delete_dag", Action.DEPLOY, Scope.PATH),
    ("reparse_dag_file", Action.DEPLOY, Scope.PATH),
    ("get_connections", Action.ADMIN, Scope.SYSTEM),
    ("get_pools", Action.ADMIN, Scope.SYSTEM),
    ("get_config", Action.ADMIN, Scope.SYSTEM),
    ("create_backfill", Action.RUN, Scope.BODY),
    ("get_list_dag_runs_batch", Action.READ, Scope.LIST),
])
def test_actions_and_scopes_of_representative_operations(name: str, action: Action,
                                                         scope: Scope) -> None:
    assert (op(name).action, op(name).scope) == (action, scope)


@pytest.mark.parametrize("path", [
    "/ui/auth/token", "/auth/login", "/execution/task-instances/1", "/docs", "/openapi.json",
    "/api/v1/dags", "/myplugin/x", "",
])
def test_every_path_beside_the_api_is_blocked_with_a_reason(path: str) -> None:
    reason = airflow.CATALOG.blocked_reason(path)
    assert reason is not None
    assert "orchgate" in reason or "/api/v2" in reason


def test_other_catalogs_block_nothing() -> None:
    assert prefect.CATALOG.blocked_reason("/ui/x") is None


def test_the_ui_reason_names_the_token_endpoint() -> None:
    assert "POST /ui/auth/token" in str(airflow.CATALOG.blocked_reason("/ui/auth/token"))


# -- bodies --------------------------------------------------------------------------------


def test_bulk_entities_use_their_own_dag_id_over_the_urls() -> None:
    body = {"actions": [{"action": "update", "entities": [
        {"dag_run_id": "r1", "dag_id": "team_b_ingest", "state": "failed"},
        {"dag_run_id": "r2"}]}]}
    assert bulk_entities("team_a_etl", body) == (("team_b_ingest", "team_a_etl"), False)


def test_bulk_string_entities_belong_to_the_url_dag_and_deletes_are_flagged() -> None:
    body = {"actions": [{"action": "delete", "entities": ["r1", {"dag_run_id": "r2",
                                                                  "dag_id": "team_a_x"}]}]}
    assert bulk_entities("team_a_etl", body) == (("team_a_etl", "team_a_x"), True)


@pytest.mark.parametrize("body", [
    {"actions": [{"action": "update", "entities": [{"dag_run_id": "r1"}]}]},  # ~ and no dag
    {"actions": [{"action": "delete", "entities": ["r1"]}]},
    {"actions": []},
    {"actions": [{"action": "explode", "entities": []}]},
    {"actions": [{"action": "update", "entities": {"dag_id": "x"}}]},
    [],
])
def test_bulk_bodies_that_name_no_dag_are_refused(body: Any) -> None:
    with pytest.raises(Reject) as err:
        bulk_entities("~", body)
    assert err.value.status == 400


def test_clear_dag_runs_entities_and_partition_mode() -> None:
    assert clear_entities("~", {"dag_runs": [{"dag_run_id": "r", "dag_id": "team_b_ingest"}]}
                          ) == ("team_b_ingest",)
    assert clear_entities("team_a_etl", {"partition_key": "p"}) == ("team_a_etl",)
    with pytest.raises(Reject):
        clear_entities("~", {"dag_runs": [{"dag_run_id": "r"}]})


async def test_bulk_delete_raises_the_action_to_deploy() -> None:
    resolver = AirflowResolver(lookups()[0])
    body = {"actions": [{"action": "delete", "entities": ["r1"]}]}
    assert await resolver.resolve(op("bulk_dag_runs"), {"dag_id": "team_a_etl"}, body) == (
        ("team_a_etl",), Action.DEPLOY)


async def test_system_operations_are_decided_on_every_dag() -> None:
    resolver = AirflowResolver(lookups()[0])
    assert await resolver.resolve(op("get_connection"), {"connection_id": "x"}, None) == (
        (EVERYTHING,), Action.ADMIN)


# -- lookups -------------------------------------------------------------------------------


async def test_backfill_and_event_log_ids_are_looked_up_once_and_cached() -> None:
    found, fake = lookups({"/api/v2/backfills/7": (200, {"dag_id": "team_b_ingest"}),
                           "/api/v2/eventLogs/3": (200, {"dag_id": None})})
    resolver = AirflowResolver(found)
    for _ in range(2):
        assert (await resolver.resolve(op("pause_backfill"), {"backfill_id": "7"}, None)
                == (("team_b_ingest",), Action.RUN))
        assert (await resolver.resolve(op("get_event_log"), {"event_log_id": "3"}, None)
                == ((EVERYTHING,), Action.READ))
    assert fake.calls == ["/api/v2/backfills/7", "/api/v2/eventLogs/3"]


@pytest.mark.parametrize(("name", "param", "value"), [
    ("get_backfill", "backfill_id", "1 OR 1"), ("get_event_log", "event_log_id", "-1"),
    ("get_import_error", "import_error_id", "x"),
])
async def test_lookup_ids_must_be_whole_numbers(name: str, param: str, value: str) -> None:
    found, fake = lookups()
    with pytest.raises(Reject) as err:
        await AirflowResolver(found).resolve(op(name), {param: value}, None)
    assert err.value.status == 400
    assert fake.calls == []


async def test_an_unknown_id_is_404() -> None:
    with pytest.raises(Reject) as err:
        await AirflowResolver(lookups()[0]).resolve(op("get_backfill"), {"backfill_id": "9"},
                                                    None)
    assert err.value.status == 404


async def test_an_import_error_belongs_to_every_dag_of_its_file() -> None:
    found, _ = lookups({"/api/v2/importErrors/4": (200, {"filename": "a.py",
                                                         "bundle_name": "dags-folder"})})
    workflows, _ = await AirflowResolver(found).resolve(op("get_import_error"),
                                                        {"import_error_id": "4"}, None)
    assert workflows == ("team_a_etl", "team_a_reporting")


@pytest.mark.parametrize("compressed", [False, True])
async def test_a_file_token_names_the_dags_of_its_file(compressed: bool) -> None:
    found, _ = lookups()
    t = token({"bundle_name": "dags-folder", "relative_fileloc": "b.py"}, compressed)
    assert await AirflowResolver(found).resolve(op("reparse_dag_file"), {"file_token": t},
                                                None) == (("team_b_ingest",), Action.DEPLOY)


@pytest.mark.parametrize("bad", ["", "!!!.sig", token({"bundle_name": "x",
                                                        "relative_fileloc": "nope.py"})])
async def test_a_file_token_of_no_known_file_is_refused(bad: str) -> None:
    with pytest.raises(Reject) as err:
        await AirflowResolver(lookups()[0]).resolve(op("reparse_dag_file"),
                                                    {"file_token": bad}, None)
    assert err.value.status in (400, 404)


async def test_the_dag_index_is_scanned_once_while_fresh() -> None:
    found, fake = lookups()
    first = await found.index()
    second = await found.index()
    assert first is second
    assert first.by_tag["etl"] == ("team_a_etl", "team_b_ingest")
    assert first.by_file[("dags-folder", "a.py")] == ("team_a_etl", "team_a_reporting")
    assert len([c for c in fake.calls if c.startswith("/api/v2/dags?")]) == 1
    assert "exclude_stale=false" in fake.calls[0]


def test_dag_index_skips_malformed_entries() -> None:
    index = DagIndex.build([{"dag_id": 3}, {"dag_id": "ok", "tags": ["bare", {"name": 1}]}])
    assert index.dag_ids == ("ok",)
    assert index.by_tag == {}


# -- list items ----------------------------------------------------------------------------


async def test_item_workflows_of_each_list_kind() -> None:
    resolver = AirflowResolver(lookups()[0])
    assert await resolver.item_workflow(op("get_dags"), {"dag_id": "team_a_etl"}) == "team_a_etl"
    assert await resolver.item_workflow(op("get_hitl_details"), {
        "task_instance": {"dag_id": "team_b_ingest"}}) == "team_b_ingest"
    assert await resolver.item_workflow(op("get_event_logs"), {"dag_id": None}) == EVERYTHING
    assert await resolver.item_workflow(op("get_import_errors"), {
        "filename": "b.py", "bundle_name": "dags-folder"}) == ("team_b_ingest",)
    assert await resolver.item_workflow(op("get_import_errors"), {
        "filename": "new.py", "bundle_name": "dags-folder"}) == (EVERYTHING,)
    assert await resolver.item_workflow(op("get_dag_tags"), "etl") == AnyOf(
        ("team_a_etl", "team_b_ingest"))
    assert await resolver.item_workflow(op("get_dag_tags"), "orphan") == AnyOf(())
    with pytest.raises(Reject):
        await resolver.item_workflow(op("get_dags"), {"dag_id": None})


def test_readable_semantics_one_all_any() -> None:
    def team_a(w: str) -> bool:
        return w.startswith("team_a")
    assert readable("team_a_etl", team_a) == ("team_a_etl",)
    assert readable("team_b_ingest", team_a) == ()
    assert readable(("team_a_etl", "team_a_reporting"), team_a) == ("team_a_etl",
                                                                    "team_a_reporting")
    assert readable(("team_a_etl", "team_b_ingest"), team_a) == ()  # all, or hidden
    assert readable((), team_a) == ()
    assert readable(AnyOf(("team_b_ingest", "team_a_etl")), team_a) == ("team_a_etl",)
    assert readable(AnyOf(()), team_a) == ()


# -- many-DAG requests ---------------------------------------------------------------------


def team_a(w: str) -> bool:
    return w.startswith("team_a")


async def test_narrow_body_dag_ids_to_readable_and_asked() -> None:
    found, _ = lookups()
    ctx = ctx_for("get_list_dag_runs_batch", body={"dag_ids": ["team_b_ingest", "team_a_etl"],
                                                   "page_limit": 5})
    assert await many.narrow(ctx, op("get_list_dag_runs_batch"), found, team_a)
    assert ctx.json == {"dag_ids": ["team_a_etl"], "page_limit": 5}
    assert ctx.body is not None and orjson.loads(ctx.body) == ctx.json


async def test_narrow_without_dag_ids_asks_for_every_readable_dag() -> None:
    found, _ = lookups()
    ctx = ctx_for("get_task_instances_batch", body={})
    assert await many.narrow(ctx, op("get_task_instances_batch"), found, team_a)
    assert ctx.json == {"dag_ids": ["team_a_etl", "team_a_reporting"]}


async def test_narrow_with_nothing_readable_answers_empty() -> None:
    found, _ = lookups()
    ctx = ctx_for("get_list_dag_runs_batch", body={"dag_ids": ["team_b_ingest"]})
    assert not await many.narrow(ctx, op("get_list_dag_runs_batch"), found, team_a)
    assert many.empty_collection(op("get_list_dag_runs_batch")) == {"dag_runs": [],
                                                                     "total_entries": 0}


async def test_narrow_query_dag_ids_of_dag_stats() -> None:
    found, _ = lookups()
    ctx = ctx_for("get_dag_stats", query=b"dag_ids=team_b_ingest&dag_ids=team_a_etl&x=1")
    assert await many.narrow(ctx, op("get_dag_stats"), found, team_a)
    assert ctx.query == b"x=1&dag_ids=team_a_etl"
    assert ctx.notes["caller_query"] == "dag_ids=team_b_ingest&dag_ids=team_a_etl&x=1"


@pytest.mark.parametrize("body", [{"dag_ids": "team_a_etl"}, {"dag_ids": [1]}, ["x"]])
async def test_narrow_refuses_malformed_dag_ids(body: Any) -> None:
    with pytest.raises(Reject):
        await many.narrow(ctx_for("get_list_dag_runs_batch", body=body),
                          op("get_list_dag_runs_batch"), lookups()[0], team_a)


async def test_match_refuses_when_any_matched_dag_is_not_allowed_and_counts_them() -> None:
    found, fake = lookups()
    ctx = ctx_for("patch_dags", query=b"dag_id_pattern=%25&limit=1&dag_display_name_pattern=x")
    with pytest.raises(Reject) as err:
        await many.matched(ctx, found, lambda w, a: team_a(w))
    assert err.value.status == 403
    assert "1 of the 3 DAGs" in err.value.detail
    assert "team_b" not in err.value.detail
    # Only the filters PATCH /dags applies are listed, over every page.
    assert "dag_id_pattern=%25" in fake.calls[0]
    assert "dag_display_name_pattern" not in fake.calls[0]
    assert "limit=100&offset=0" in fake.calls[0]


async def test_match_allows_when_every_matched_dag_is_allowed() -> None:
    found, _ = lookups()
    ctx = ctx_for("patch_dags", query=b"dag_id_pattern=team_a")
    await many.matched(ctx, found, lambda w, a: a == Action.RUN)
    assert ctx.workflows == ("team_a_etl", "team_a_reporting", "team_b_ingest")


# -- secrets and notes ---------------------------------------------------------------------


def test_connections_lose_password_and_extra_keeping_the_schema() -> None:
    one = {"connection_id": "db", "conn_type": "postgres", "host": "h", "password": "s3cret",
           "extra": '{"token": "t"}', "login": None}
    assert redact("connection", one) == {**one, "password": MASK, "extra": MASK}
    many_ = {"connections": [one, {**one, "password": None, "extra": ""}], "total_entries": 2}
    out = redact("connection", many_)
    assert [c["password"] for c in out["connections"]] == [MASK, None]
    assert [c["extra"] for c in out["connections"]] == [MASK, ""]
    assert "s3cret" not in json.dumps(out)


def test_variables_lose_their_values() -> None:
    out = redact("variable", {"variables": [{"key": "k", "value": "v", "description": None,
                                             "is_encrypted": True}], "total_entries": 1})
    assert out["variables"][0]["value"] == MASK
    assert redact("variable", {"key": "k", "value": "v"})["value"] == MASK


def test_stamp_adds_a_note_and_keeps_the_callers() -> None:
    fresh = orjson.loads(stamp({"logical_date": None}, "alice", "r-1"))
    assert fresh == {"logical_date": None,
                     "note": "Triggered through orchgate by alice (request r-1)"}
    kept = orjson.loads(stamp({"logical_date": None, "note": "why"}, "alice", "r-1"))
    assert kept["note"] == "why\n\nTriggered through orchgate by alice (request r-1)"
    long = "x" * (NOTE_LIMIT - 10)
    assert orjson.loads(stamp({"note": long}, "alice", "r-1"))["note"] == long
    with pytest.raises(Reject):
        stamp(["not", "an", "object"], "alice", "r-1")
