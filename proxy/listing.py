"""Reads over many workflows: the response shows only what the caller may read.

The upstream list is read page by page with orchgate's credential, every item whose
workflow the caller may not read is dropped, and the caller's own `limit`/`offset` are applied
to what remains — so pages stay full, `offset` means what the caller asked and
`total_entries` counts only visible items. Responses keep the upstream's schema (strict
clients such as apache-airflow-client validate them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from proxy.catalog.operation import Operation
from proxy.context import RequestContext
from proxy.errors import Reject, bad_request
from proxy.upstream.forward import Headers, Upstream

MAX_SCANNED = 50_000  # items read from the upstream for one request, at most
# Page sizes: Airflow's default `[api] maximum_page_limit`, Prefect's default API limit.
UPSTREAM_PAGE = {"airflow": 100, "prefect": 200}
DEFAULT_LIMIT = {"airflow": 50, "prefect": 200}



@dataclass(frozen=True, slots=True)
class AnyOf:
    """An item shown when the caller may read any one of these workflows (an Airflow tag is
    visible to who may read some DAG that carries it); none at all: hidden."""

    workflows: tuple[str, ...]


# An item's workflow; a tuple when it belongs to several at once (an Airflow import error
# belongs to every DAG of its file): shown only when the caller may read all of them.
ItemWorkflows = str | tuple[str, ...] | AnyOf
ItemWorkflow = Callable[[Any], Awaitable[ItemWorkflows]]
CanRead = Callable[[str], bool]


def readable(workflows: ItemWorkflows, can_read: CanRead) -> tuple[str, ...]:
    """The workflows that make an item visible to the caller; () when it is hidden."""
    if isinstance(workflows, str):
        return (workflows,) if can_read(workflows) else ()
    if isinstance(workflows, AnyOf):
        return tuple(w for w in workflows.workflows if can_read(w))[:1]
    return workflows if workflows and all(can_read(w) for w in workflows) else ()


async def filter_list(ctx: RequestContext, upstream: Upstream, op: Operation, path_qs: bytes,
                      headers: Headers, item_workflow: ItemWorkflow,
                      can_read: CanRead, send: Any) -> None:
    page_size = UPSTREAM_PAGE[op.system]
    path, _, query = path_qs.partition(b"?")
    if op.method == "GET":
        params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        limit, offset = _window(dict(params), op.system)
        rest = [(k, v) for k, v in params if k not in ("limit", "offset")]

        def page(start: int) -> tuple[bytes, bytes | None]:
            q = urlencode([*rest, ("limit", str(page_size)), ("offset", str(start))])
            return path + b"?" + q.encode(), None
    else:
        request = ctx.json if isinstance(ctx.json, dict) else {}
        if ctx.json is not None and not isinstance(ctx.json, dict):
            raise bad_request("the body must be a JSON object")
        limit, offset = _window(request, op.system)

        def page(start: int) -> tuple[bytes, bytes | None]:
            return path_qs, orjson.dumps({**request, "limit": page_size, "offset": start})

    visible: list[Any] = []
    workflows: dict[str, None] = {}
    scanned = 0
    while True:
        target, page_body = page(scanned)
        status, data = await upstream.get_json(target, headers, op.method, page_body,
                                               retry=op.idempotent)
        ctx.upstream_status = status
        if status != 200:
            await send_json(ctx, status, data, send)  # the upstream's own error, unchanged
            return
        items = data if op.list_key == "." else (data or {}).get(op.list_key)
        if not isinstance(items, list):
            raise Reject(502, "upstream-error", "Bad gateway",
                         f"{op.system} answered {op.name} without a list")
        for item in items:
            if not isinstance(item, dict | str):  # Airflow's tag list holds bare names
                continue
            shown = readable(await item_workflow(item), can_read)
            if shown:
                visible.append(item)
                workflows.update(dict.fromkeys(shown))
        scanned += len(items)
        if len(items) < page_size or scanned >= MAX_SCANNED:
            break
    ctx.notes["list"] = {"scanned": scanned, "visible": len(visible)}
    ctx.workflows = tuple(workflows)[:100]  # the audit record names at most 100
    window = visible[offset:offset + limit]
    if op.list_key == ".":
        await send_json(ctx, 200, window, send)
    else:
        await send_json(ctx, 200, {**data, op.list_key: window, "total_entries": len(visible)},
                         send)


def _window(params: dict[str, Any], system: str) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT[system]))
        offset = int(params.get("offset", 0))
    except (TypeError, ValueError):
        raise bad_request("limit and offset must be whole numbers") from None
    if limit < 0 or offset < 0:
        raise bad_request("limit and offset must not be negative")
    return min(limit, UPSTREAM_PAGE[system]), offset


async def send_json(ctx: RequestContext, status: int, data: Any, send: Any) -> None:
    body = orjson.dumps(data)
    ctx.status = status
    ctx.bytes_out = len(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", ctx.request_id.encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
