"""Operations: what an upstream route does, which right it needs, where its workflows are.

A catalog is a list of `Operation`s for one upstream. A request that matches no operation is
denied ("operation not in catalog"): orchgate forwards only what it understands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

# Airflow declares these path parameters as integers. Its router still matches any segment
# and tries routes in registration order, so `…/{task_id}/state-store/dependencies` runs the
# state-store route, not `…/{task_id}/{map_index}/dependencies`: matching only digits keeps
# orchgate's choice the same as Airflow's (tests/security/test_routing_properties.py).
INTEGER_PARAMS = {name: r"-?\d+" for name in
                  ("map_index", "try_number", "task_try_number", "version_number")}


class Action(IntEnum):
    """The ladder of rights: a grant of one includes those below it."""

    READ = 1
    RUN = 2
    DEPLOY = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Action:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown action {text!r} (read, run, deploy, admin)") from None


class Scope(IntEnum):
    """How the workflow(s) of a request are found."""

    NONE = 0  # no workflow: any authenticated caller (version, health, CSRF token, storage)
    PATH = 1  # a path parameter names the workflow (or an id resolved by lookup)
    BODY = 2  # a JSON body field names the workflow (or an id resolved by lookup)
    LIST = 3  # a read over many workflows: the response is filtered to what the caller may read
    SYSTEM = 4  # a server-wide object (work pools, blocks, settings): decided on the workflow
    #             "*", i.e. granted only to who holds the action on every workflow
    QUERY = 5  # query parameters select the workflows (Airflow's PATCH /dags?dag_id_pattern=)


@dataclass(frozen=True, slots=True)
class Operation:
    system: str
    name: str  # the upstream's operationId (or a stable name for routes without one)
    method: str  # "GET", ... or "WEBSOCKET"
    template: str  # relative to the API root, e.g. "/dags/{dag_id}/dagRuns"
    action: Action
    scope: Scope = Scope.PATH
    param: str = ""  # the path parameter or body field that locates the workflow
    resolver: str = ""  # how that value becomes a workflow id (see ownership.py); "" = it is one
    streaming: bool = False  # long-lived response (NDJSON): never buffered
    inspect_body: bool = False  # the JSON body can raise the action (e.g. job_variables)
    list_key: str = ""  # LIST reads (and `~` in an Airflow path): the JSON key of the items,
    #                     "." when the response body is the list itself
    many: str = ""  # many workflows, decided before the request is sent (proxy/airflow/many.py):
    #                 "narrow" sets its `dag_ids` to what the caller may read ∩ what it asked;
    #                 "match" needs the right on every workflow its query matches
    redact: str = ""  # the response holds secret values of this kind (airflow/redaction.py)
    stamp: bool = False  # the request body gets a note naming the caller (Airflow triggers)
    blocked: str = ""  # known, never served: the reason given to the caller
    pure_read: bool = False  # a POST that only reads (Prefect's `*/filter`): may be sent twice
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = tuple(re.findall(r"{(\w+)}", self.template))
        # A parameter is exactly one path segment: never a "/" (see edge.py, which rejects
        # encoded slashes before matching, so segments here are unambiguous).
        regex = "".join(
            f"(?P<{part[1:-1]}>{INTEGER_PARAMS.get(part[1:-1], '[^/]+')})"
            if part.startswith("{") else re.escape(part)
            for part in re.split(r"({\w+})", self.template)
        )
        object.__setattr__(self, "_pattern", re.compile(regex + r"\Z"))
        object.__setattr__(self, "_params", params)

    @property
    def idempotent(self) -> bool:
        """Safe to send again (upstream/resilience.py retries): GET and HEAD, and POSTs that
        only read. A LIST read is a query by construction (its answer is filtered); any other
        read POST must say `pure_read`: a READ POST may still write (Airflow's favorite_dag)."""
        return self.method in ("GET", "HEAD") or (self.method == "POST" and (
            self.pure_read or (self.action == Action.READ and self.scope == Scope.LIST)))

    @property
    def needs_body(self) -> bool:
        return self.scope == Scope.BODY or self.inspect_body

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        m = self._pattern.match(path)
        return m.groupdict() if m else None


@dataclass(frozen=True, slots=True)
class Catalog:
    system: str
    operations: tuple[Operation, ...]
    # Paths beside the API root that are refused with a reason (path prefix, why), e.g.
    # Airflow's internal UI API. Anything else outside the API root is simply not found.
    blocked: tuple[tuple[str, str], ...] = ()
    _by_method: dict[str, tuple[Operation, ...]] = field(init=False, repr=False, compare=False)
    # (method, first segment) → the operations that can match a path starting with it, in
    # the order above; a path whose first segment no template starts with gets the method's
    # operations with a parameter there (none in the shipped catalogs).
    _by_first: dict[tuple[str, str | None], tuple[Operation, ...]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Literal segments win over parameters, as in the upstreams' routers (Prefect's
        # `/deployments/filter` before `/deployments/{id}`): try the most literal first.
        by_method: dict[str, list[Operation]] = {}
        for op in sorted(self.operations,
                         key=lambda op: (op.template.count("{"), -len(op.template))):
            by_method.setdefault(op.method, []).append(op)
        object.__setattr__(self, "_by_method", {m: tuple(ops) for m, ops in by_method.items()})
        by_first: dict[tuple[str, str | None], tuple[Operation, ...]] = {}
        for method, ops in by_method.items():
            firsts = {_first_segment(op.template) for op in ops}
            for first in firsts:
                by_first[(method, first)] = tuple(
                    op for op in ops if _first_segment(op.template) in (first, None))
        object.__setattr__(self, "_by_first", by_first)

    def blocked_reason(self, path: str) -> str | None:
        """Why `path` (relative to the upstream's prefix, outside its API root) is refused."""
        for prefix, reason in self.blocked:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                return reason
        return None

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation for (method, path), with its path parameters."""
        ops = self._by_first.get((method, path[1:].partition("/")[0]))
        if ops is None:
            ops = self._by_first.get((method, None), ())
        for op in ops:
            m = op._pattern.match(path)
            if m is not None:
                return op, m.groupdict()
        return None


def _first_segment(template: str) -> str | None:
    """A template's first segment, or None when a parameter is in it (it matches any)."""
    first = template[1:].partition("/")[0]
    return None if "{" in first else first
