"""Helpers shared by the systems' resolvers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.errors import bad_request

MAX_WORKFLOW_ID = 512
_CACHE_LIMIT = 50_000


def check_workflow_id(value: object, what: str) -> str:
    """Workflow ids are validated before they reach the policy engine: junk costs nothing."""
    if not isinstance(value, str) or not value or len(value) > MAX_WORKFLOW_ID:
        raise bad_request(f"{what} must be a non-empty string of at most {MAX_WORKFLOW_ID} "
                          "characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise bad_request(f"{what} contains control characters")
    return value


def as_uuid(value: object, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise bad_request(f"{what} is not a valid id") from None


class TTLCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._data: dict[str, tuple[float, str]] = {}

    def get(self, key: str) -> str | None:
        hit = self._data.get(key)
        if hit is None or hit[0] < self._clock():
            return None
        return hit[1]

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[str]]) -> str:
        hit = self.get(key)
        if hit is None:
            hit = await load()
            self.put(key, hit)
        return hit

    def put(self, key: str, value: str) -> None:
        if len(self._data) >= _CACHE_LIMIT:
            self._data.clear()
        self._data[key] = (self._clock() + self._ttl, value)


def body_field(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body.get(name)
