"""Ownership from upstream metadata: `owner:<team>` tags on Airflow DAGs and Prefect deployments.

Opt-in per system (`policy.owner_tags`). Tags are written by whoever ships the DAG or the
deployment, so they only count where no policy row owns the workflow, and the audit record
names the source that decided. Looked up with orchgate's own credential, cached with a TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from proxy.resolve.common import TTLCache
from proxy.upstream.forward import Upstream

TAG_PREFIX = "owner:"


class OwnerTags:
    def __init__(self, systems: tuple[str, ...], upstreams: dict[str, Upstream],
                 auth: dict[str, Callable[[], bytes]], ttl: float) -> None:
        self._systems = frozenset(systems)
        self._upstreams = upstreams
        self._auth = auth
        self._cache = TTLCache(ttl)

    def enabled(self, system: str) -> bool:
        return system in self._systems

    @staticmethod
    def teams(tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """`owner:a` → `team:a`, for tags given as strings or Airflow's `{"name": …}`."""
        names = [t.get("name", "") if isinstance(t, dict) else t for t in tags]
        return tuple(dict.fromkeys(
            "team:" + n[len(TAG_PREFIX):] for n in names
            if isinstance(n, str) and n.startswith(TAG_PREFIX) and len(n) > len(TAG_PREFIX)))

    async def owners(self, system: str, workflow: str) -> tuple[str, ...]:
        key = f"{system}:{workflow}"
        hit = self._cache.get(key)
        if hit is not None:
            return tuple(hit.split("\n")) if hit else ()
        teams = await self._lookup(system, workflow)
        self._cache.put(key, "\n".join(teams))
        return teams

    async def _lookup(self, system: str, workflow: str) -> tuple[str, ...]:
        if system == "airflow":
            path = f"/api/v2/dags/{quote(workflow, safe='')}"
        else:
            flow, _, deployment = workflow.partition("/")
            if deployment in ("", "-"):
                return ()  # an ad-hoc flow run has no deployment, so no tags
            path = f"/api/deployments/name/{quote(flow, safe='')}/{quote(deployment, safe='')}"
        status, data = await self._upstreams[system].get_json(
            path.encode(), [(b"authorization", self._auth[system]())])
        if status != 200 or not isinstance(data, dict):
            return ()  # unknown to the upstream: no tag ownership (fails closed: no grant)
        tags = data.get("tags") or []
        return self.teams(tags if isinstance(tags, list) else [])
