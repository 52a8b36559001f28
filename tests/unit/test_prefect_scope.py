"""proxy.prefect: the scope injected into Prefect filter bodies, and who sees what."""

from __future__ import annotations

import base64
from urllib.parse import unquote

import orjson
import pytest

from proxy.errors import Reject
from proxy.prefect.scoped import constrain, constrain_deployment, scope_events, scope_page_token
from proxy.prefect.visible import Inventory, Visible, visible

A_FLOW, B_FLOW, S_FLOW = "f-a", "f-b", "f-s"
INVENTORY = Inventory(
    flows={A_FLOW: "team-a-etl", B_FLOW: "team-b-ingest", S_FLOW: "shared-housekeeping"},
    deployments={"d-a": (A_FLOW, "nightly", ()), "d-b": (B_FLOW, "hourly", ()),
                 "d-s": (S_FLOW, "daily", ())},
)


def reader_of(*prefixes: str) -> Visible:
    def decide(workflow: str, tags: tuple[str, ...] = ()) -> bool:
        return workflow.startswith(prefixes)
    return visible(INVENTORY, decide, everything=False)


def test_a_team_reader_sees_its_own_and_nothing_else() -> None:
    scope = reader_of("team-a-", "shared-")

    assert scope.deployments == {"d-a", "d-s"}
    assert scope.flows == {A_FLOW, S_FLOW}
    assert not scope.partial
    assert scope.run_allowed({"deployment_id": "d-a"})
    assert not scope.run_allowed({"deployment_id": "d-b", "flow_id": A_FLOW})
    assert not scope.run_allowed({"deployment_id": None, "flow_id": B_FLOW})


def test_a_grant_on_one_deployment_only_is_partial() -> None:
    def decide(workflow: str, tags: tuple[str, ...] = ()) -> bool:
        return workflow == "team-a-etl/nightly"
    scope = visible(INVENTORY, decide, everything=False)

    assert scope.partial
    assert scope.adhoc_flows == frozenset()
    body: dict[str, object] = {}
    constrain(body, "flows", "id", sorted(scope.flows))
    constrain_deployment(body, sorted(scope.deployments), adhoc=True)
    assert body == {"flows": {"id": {"any_": [A_FLOW]}},
                    "flow_runs": {"deployment_id": {"operator": "or_", "any_": ["d-a"],
                                                    "is_null_": True}}}


def test_injection_intersects_what_the_caller_asked_and_keeps_the_rest() -> None:
    body = {"flows": {"id": {"any_": [A_FLOW, B_FLOW]}, "name": {"like_": "team"}},
            "flow_runs": {"operator": "or_", "name": {"any_": ["x"]}}, "limit": 5}

    constrain(body, "flows", "id", [A_FLOW, S_FLOW])

    assert body["flows"] == {"id": {"any_": [A_FLOW]}, "name": {"like_": "team"}}
    # The caller's or_ in another top-level filter stays: Prefect ANDs the top level.
    assert body["flow_runs"] == {"operator": "or_", "name": {"any_": ["x"]}}


@pytest.mark.parametrize("body", [
    {"deployments": {"operator": "or_", "name": {"any_": ["x"]}}},
    {"deployments": {"id": {"operator": "or_", "any_": ["d-b"]}}},
    {"deployments": "all"},
    {"deployments": {"id": {"any_": "d-b"}}},
])
def test_a_filter_that_cannot_be_narrowed_exactly_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(Reject) as err:
        constrain(body, "deployments", "id", ["d-a"])
    assert err.value.status == 400


def test_an_empty_scope_matches_nothing_rather_than_everything() -> None:
    body: dict[str, object] = {}

    constrain(body, "deployments", "id", [])

    assert body == {"deployments": {"id": {"any_": []}}}


def test_events_are_scoped_by_an_anded_any_resource_filter() -> None:
    body = {"filter": {"any_resource": {"id_prefix": ["prefect.flow-run."]}}, "limit": 10}

    scope_events(body, "filter", reader_of("team-a-"))

    assert body["filter"] == {"any_resource": [
        {"id_prefix": ["prefect.flow-run."]},
        {"id": [f"prefect.flow.{A_FLOW}", "prefect.deployment.d-a"]},
    ]}


def test_a_forged_page_token_is_rescoped() -> None:
    forged = {"filter": {"any_resource": {"id": [f"prefect.flow.{B_FLOW}"]}}, "count": 9,
              "page_size": 50, "offset": 50}
    token = base64.b64encode(base64.b64encode(orjson.dumps(forged))).decode()

    query = scope_page_token(f"page-token={token}".encode(), reader_of("team-a-"))

    sent = query.decode().split("page-token=", 1)[1]
    page = orjson.loads(base64.b64decode(base64.b64decode(unquote(sent))))
    assert page["filter"]["any_resource"][-1] == {
        "id": [f"prefect.flow.{A_FLOW}", "prefect.deployment.d-a"]}
    assert page["filter"]["any_resource"][0] == {"id": [f"prefect.flow.{B_FLOW}"]}


def test_a_page_token_that_is_not_one_is_refused() -> None:
    with pytest.raises(Reject):
        scope_page_token(b"page-token=%%%", reader_of("team-a-"))
