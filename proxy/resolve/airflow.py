"""Airflow: which DAG(s) a request touches (apache-airflow 3.3.2, `/api/v2`).

Most operations name their DAG in the path. The others are resolved here (see the catalog's
docstring): bulk bodies whose entities each carry a `dag_id`, and ids that only Airflow can map
to a DAG — looked up with orchgate's own credential (a viewer token for the internal caller
`orchgate`: every lookup is a GET that role may make, so nothing more is minted). A backfill's
or an event log's DAG never changes, so those answers are cached for the lookup TTL; which DAGs
a file defines or a tag marks does change, so the DAG index is kept for a few seconds only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from proxy.catalog.operation import Action, Operation, Scope
from proxy.errors import bad_request, not_found, upstream_unavailable
from proxy.listing import AnyOf, ItemWorkflows
from proxy.resolve.common import TTLCache, body_field, check_workflow_id
from proxy.upstream.forward import Headers, Upstream

# Every DAG: the workflow of deployment-wide objects (Scope.SYSTEM) and of things that belong
# to no DAG (an event log without dag_id, an import error of a file that defines no DAG yet),
# so only who holds the right on every DAG sees them — as in the Prefect resolver.
EVERYTHING = "*"
INDEX_SECONDS = 5.0  # how long the DAG index (ids, files, tags) is trusted
PAGE = 100  # Airflow's default `[api] maximum_page_limit`
MAX_DAGS = 50_000


@dataclass(frozen=True, slots=True)
class DagIndex:
    """Every DAG Airflow knows (stale ones too), by file and by tag."""

    dag_ids: tuple[str, ...]
    by_file: dict[tuple[str, str], tuple[str, ...]]  # (bundle_name, relative_fileloc) → DAGs
    by_tag: dict[str, tuple[str, ...]]

    @classmethod
    def build(cls, dags: Iterable[dict[str, Any]]) -> DagIndex:
        ids: list[str] = []
        by_file: dict[tuple[str, str], list[str]] = {}
        by_tag: dict[str, list[str]] = {}
        for dag in dags:
            dag_id = dag.get("dag_id")
            if not isinstance(dag_id, str):
                continue
            ids.append(dag_id)
            key = (str(dag.get("bundle_name") or ""), str(dag.get("relative_fileloc") or ""))
            by_file.setdefault(key, []).append(dag_id)
            for tag in dag.get("tags") or ():
                name = tag.get("name") if isinstance(tag, dict) else None
                if isinstance(name, str):
                    by_tag.setdefault(name, []).append(dag_id)
        return cls(tuple(ids), {k: tuple(v) for k, v in by_file.items()},
                   {k: tuple(v) for k, v in by_tag.items()})


class AirflowLookups:
    """id → DAG lookups at the Airflow API server, and the DAG index, cached."""

    def __init__(self, upstream: Upstream, auth: Callable[[], bytes], ttl: float,
                 index_seconds: float = INDEX_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._upstream = upstream
        self._auth = auth
        self._cache = TTLCache(ttl)
        self._index_seconds = index_seconds
        self._clock = clock
        self._index: tuple[float, DagIndex] | None = None
        self._index_lock = asyncio.Lock()

    async def get(self, path: str) -> tuple[int, Any]:
        headers: Headers = [(b"authorization", self._auth())]
        return await self._upstream.get_json(f"/api/v2{path}".encode(), headers)

    async def _object(self, kind: str, path: str) -> dict[str, Any]:
        status, data = await self.get(path)
        if status == 404:
            raise not_found(f"no {kind} with this id")
        if status != 200 or not isinstance(data, dict):
            raise upstream_unavailable("airflow", f"lookup of {kind} answered HTTP {status}")
        return data

    async def dags_matching(self, query: Iterable[tuple[str, str]]) -> tuple[str, ...]:
        """Every DAG id `GET /dags` answers for these filters (all pages)."""
        dags = await self._scan(query)
        return tuple(d["dag_id"] for d in dags if isinstance(d.get("dag_id"), str))

    async def _scan(self, query: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        base = [(k, v) for k, v in query if k not in ("limit", "offset")]
        out: list[dict[str, Any]] = []
        while True:
            qs = urlencode([*base, ("limit", str(PAGE)), ("offset", str(len(out)))])
            status, data = await self.get(f"/dags?{qs}")
            page = data.get("dags") if status == 200 and isinstance(data, dict) else None
            if not isinstance(page, list):
                raise upstream_unavailable("airflow", f"listing DAGs answered HTTP {status}")
            out.extend(d for d in page if isinstance(d, dict))
            if len(page) < PAGE or len(out) >= MAX_DAGS:
                return out

    async def index(self) -> DagIndex:
        """Every DAG (stale ones too), refreshed at most every few seconds, single flight."""
        async with self._index_lock:
            now = self._clock()
            if self._index is None or self._index[0] <= now:
                dags = await self._scan([("exclude_stale", "false")])
                self._index = (now + self._index_seconds, DagIndex.build(dags))
            return self._index[1]

    async def backfill(self, backfill_id: str) -> str:
        bid = _whole_number(backfill_id, "backfill_id")

        async def load() -> str:
            data = await self._object("backfill", f"/backfills/{bid}")
            return check_workflow_id(data.get("dag_id"), "dag_id")
        return await self._cache.get_or_load("backfill:" + bid, load)

    async def event_log(self, event_log_id: str) -> str:
        eid = _whole_number(event_log_id, "event_log_id")

        async def load() -> str:
            dag_id = (await self._object("event log", f"/eventLogs/{eid}")).get("dag_id")
            return check_workflow_id(dag_id, "dag_id") if dag_id else EVERYTHING
        return await self._cache.get_or_load("event_log:" + eid, load)

    async def file_dags(self, bundle_name: object, filename: object) -> tuple[str, ...]:
        """The DAGs a file defines; (EVERYTHING,) for a file that defines none (yet)."""
        index = await self.index()
        return index.by_file.get((str(bundle_name or ""), str(filename or ""))) or (EVERYTHING,)

    async def import_error(self, import_error_id: str) -> tuple[str, ...]:
        iid = _whole_number(import_error_id, "import_error_id")
        data = await self._object("import error", f"/importErrors/{iid}")
        return await self.file_dags(data.get("bundle_name"), data.get("filename"))

    async def file_token(self, token: str) -> tuple[str, ...]:
        """The DAGs of the file a `parseDagFile` token names.

        The token is itsdangerous' URLSafeSerializer output (airflow/api_fastapi/core_api/
        datamodels/dags.py `file_token`): base64url JSON payload (zlib-compressed when it starts
        with "."), a dot, a signature. The payload reads without the key; Airflow checks the
        signature and parses exactly the file the payload names, so a forged token gains
        nothing (core_api/security.py `requires_access_dag_from_file_token`).
        """
        payload = _token_payload(token)
        dags = await self.file_dags(payload.get("bundle_name"), payload.get("relative_fileloc"))
        if dags == (EVERYTHING,):
            raise not_found("no DAG file for this token")
        return dags


def _whole_number(value: str, what: str) -> str:
    if not value.isdigit() or len(value) > 18:
        raise bad_request(f"{what} must be a whole number")
    return str(int(value))


def _token_payload(token: str) -> dict[str, Any]:
    compressed = token.startswith(".")
    encoded = token[1:] if compressed else token
    encoded = encoded.rsplit(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        if compressed:
            raw = zlib.decompressobj().decompress(raw, 64 * 1024)
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError, zlib.error):
        raise bad_request("file_token is not a valid token") from None
    if not isinstance(payload, dict):
        raise bad_request("file_token is not a valid token")
    return payload


class AirflowResolver:
    def __init__(self, lookups: AirflowLookups) -> None:
        self._airflow = lookups

    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                      ) -> tuple[tuple[str, ...], Action]:
        a = self._airflow
        action = op.action
        match op.resolver:
            case "":
                if op.scope == Scope.BODY:  # POST /backfills, …/dry_run: the body's dag_id
                    workflows: tuple[str, ...] = (
                        check_workflow_id(body_field(body, op.param), op.param),)
                else:
                    workflows = (check_workflow_id(params[op.param], op.param),)
            case "system":
                workflows = (EVERYTHING,)
            case "many":
                workflows = ()  # decided on what the query matches (airflow/many.py)
            case "backfill_id":
                workflows = (await a.backfill(params[op.param]),)
            case "event_log_id":
                workflows = (await a.event_log(params[op.param]),)
            case "import_error_id":
                workflows = await a.import_error(params[op.param])
            case "file_token":
                workflows = await a.file_token(params[op.param])
            case "bulk_entities":
                workflows, deletes = bulk_entities(params["dag_id"], body)
                if deletes:  # erasing runs or task instances: see the catalog
                    action = max(action, Action.DEPLOY)
            case "clear_entities":
                workflows = clear_entities(params["dag_id"], body)
            case other:
                raise AssertionError(f"unknown resolver {other!r} for {op.name}")
        return tuple(dict.fromkeys(workflows)), action

    async def item_workflow(self, op: Operation, item: Any) -> ItemWorkflows:
        """The workflow(s) of one item of a list response."""
        if op.resolver == "dag_tag":
            if not isinstance(item, str):
                return EVERYTHING
            return AnyOf((await self._airflow.index()).by_tag.get(item, ()))
        if not isinstance(item, dict):
            return EVERYTHING
        if op.resolver == "import_error":
            return await self._airflow.file_dags(item.get("bundle_name"), item.get("filename"))
        dag_id = item.get("dag_id")
        if dag_id is None and isinstance(item.get("task_instance"), dict):
            dag_id = item["task_instance"].get("dag_id")  # HITL details
        if dag_id is None and op.resolver == "event_log":
            return EVERYTHING  # scheduler and CLI events name no DAG
        return check_workflow_id(dag_id, "dag_id")


def bulk_entities(url_dag_id: str, body: Any) -> tuple[tuple[str, ...], bool]:
    """Every DAG a bulk `PATCH …/dagRuns` or `…/taskInstances` body touches.

    Each entity's own `dag_id` wins over the URL's; a bare string entity (a delete by id)
    belongs to the URL's DAG (airflow/api_fastapi/core_api/services/public/dag_run.py
    `_resolve_entity_key`, task_instances.py `_extract_task_identifiers`). Returns the DAGs and
    whether any action deletes.
    """
    actions = body_field(body, "actions")
    if not isinstance(actions, list) or not actions:
        raise bad_request("the body must have a non-empty list of actions")
    dags: list[str] = []
    deletes = False
    for action in actions:
        if not isinstance(action, dict) or not isinstance(action.get("entities"), list):
            raise bad_request("each action must have a list of entities")
        kind = action.get("action")
        if kind not in ("create", "update", "delete"):
            raise bad_request("each action must be create, update or delete")
        deletes = deletes or kind == "delete"
        for entity in action["entities"]:
            dag_id = entity.get("dag_id") if isinstance(entity, dict) else None
            dags.append(_entity_dag(dag_id or url_dag_id))
    return tuple(dict.fromkeys(dags)), deletes


def clear_entities(url_dag_id: str, body: Any) -> tuple[str, ...]:
    """`POST /dags/{dag_id}/clearDagRuns`: its `dag_runs` entries (or, without any, the URL's
    DAG, whose runs its partition selectors pick; dag_run.py `clear_dag_runs`)."""
    runs = body_field(body, "dag_runs") or []
    if not isinstance(runs, list):
        raise bad_request("dag_runs must be a list")
    dags = [_entity_dag((r.get("dag_id") if isinstance(r, dict) else None) or url_dag_id)
            for r in runs]
    return tuple(dict.fromkeys(dags or [_entity_dag(url_dag_id)]))


def _entity_dag(dag_id: object) -> str:
    if dag_id == "~":  # Airflow refuses it too, per entity: refuse the whole request here
        raise bad_request("with ~ in the path, every entity must name its dag_id")
    return check_workflow_id(dag_id, "dag_id")

