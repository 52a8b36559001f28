"""A stand-in Prefect server for the socket benchmark: `python -m benchmarks.prefect_upstream`.

It speaks the `prefect` subprotocol as Prefect 3.9.1 does (prefect/server/utilities/
subscriptions.py, accept_prefect_socket): the first message must be
`{"type": "auth", "token": <auth string>}`, answered `{"type": "auth_success"}`, a wrong token
closes with 1008. Every later frame is echoed, so a client measures the round trip through
orchgate. It also answers the lookups orchgate makes to filter `events/in` frames (flow run →
deployment → flow), with fixed objects: every event of the benchmark names one flow run of
`team-a-etl/nightly`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvloop
from aiohttp import WSMsgType, web

FLOW_RUN = "0b6e7d43-5f0e-4c47-9a55-0e1f4c1f4a01"
DEPLOYMENT = "6a1c2f7e-3b8d-4e21-8f7a-2d9c5b3e1a02"
FLOW = "c4d5e6f7-0a1b-4c2d-9e3f-4a5b6c7d8e03"
OBJECTS: dict[str, dict[str, object]] = {
    f"/api/flow_runs/{FLOW_RUN}": {"id": FLOW_RUN, "flow_id": FLOW,
                                   "deployment_id": DEPLOYMENT, "name": "bench-run"},
    f"/api/deployments/{DEPLOYMENT}": {"id": DEPLOYMENT, "flow_id": FLOW, "name": "nightly"},
    f"/api/flows/{FLOW}": {"id": FLOW, "name": "team-a-etl"},
}


def app(auth_string: str) -> web.Application:
    async def lookup(request: web.Request) -> web.Response:
        found = OBJECTS.get(request.path)
        if found is None:
            return web.json_response({"detail": "Not found"}, status=404)
        return web.json_response(found)

    async def events_in(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("prefect",), max_msg_size=4 * 2**20)
        await ws.prepare(request)
        first = await ws.receive(timeout=10)
        try:
            auth = json.loads(first.data) if first.type == WSMsgType.TEXT else None
        except ValueError:
            auth = None
        if not isinstance(auth, dict) or auth.get("token") != auth_string:
            await ws.close(code=1008, message=b"Invalid token")
            return ws
        await ws.send_str('{"type": "auth_success"}')
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    application = web.Application()
    application.router.add_get("/api/events/in", events_in)
    application.router.add_get("/api/{kind}/{id}", lookup)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app(args.auth_file.read_text().strip()), host="127.0.0.1", port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
