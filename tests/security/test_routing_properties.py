"""Property tests: one request, one meaning — at orchgate and at the upstream alike.

For generated request paths (built from the catalog's and the upstreams' own templates, filled
with hostile segments and percent-encoded at random):

- the edge's canonical form is idempotent and is exactly what the upstream decodes;
- a request orchgate accepts under an operation is routed by the upstream (its real route
  table, Starlette's router: tests/security/routing_model.py) to that same operation with the
  same parameters, or to none — never to another;
- every catalog operation is a route of its upstream.

Together > 200,000 generated cases (each generated path is checked in four encodings
under every method); each property is a few microseconds, so the budget is
hypothesis' own overhead (well under a minute).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.routing_model import (
    API_ROOTS,
    CATALOGS,
    PREFIXES,
    check_canonical,
    check_one_meaning,
    upstream_routes,
)

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS", "WEBSOCKET")
# Segments that have confused proxies and routers before, plus every literal of every route.
LITERALS = sorted({part for system in ("airflow", "prefect") for r in upstream_routes(system)
                   for part in r.path.split("/") if part and "{" not in part})
HOSTILE = [
    "", ".", "..", "...", "~", "*", "%", "%25", "%2e", "%2e%2e", ".%2e", "%2F", "%2f", "%252F",
    "%5C", "\\", ";", "..;", "x;y=1", "%3B", "#", "%23", "?", "%3F", "%00", "%0a", "%0d%0a",
    "%C0%AE", "%C0%AF", "%E0%80%AE", "%FF", "%EF%BC%8F", "%C2%A0", " ", "%20", "+", "%2B",
    "airflow", "prefect", "api", "v2", "team_a_etl", "team_b_etl", "team_a_%", "team_%25",
    "0b0e2d4e-1f3b-4c39-9d6a-0123456789ab", "0B0E2D4E-1F3B-4C39-9D6A-0123456789AB",
    "0b0e2d4e1f3b4c399d6a0123456789ab", "-1", "0", "01", "1e3", "%7E", "%61",
]
segment = st.one_of(
    st.sampled_from(LITERALS),
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
    st.text(alphabet="abc-_.~%2345678ABCDEFef/;\\", max_size=8),
)


def encode(text: str, how: int) -> str:
    """A raw form of one decoded piece: as is (how=0), percent-encoded the usual way (1),
    or with every byte percent-encoded (2)."""
    if how == 0:
        return text
    if how == 1:
        return quote(text, safe="~")
    return "".join(f"%{b:02X}" for b in text.encode("utf-8"))


Pieces = tuple[str, tuple[str, ...], int]  # system, decoded pieces after "/", a mixing mask


@st.composite
def path_pieces(draw: st.DrawFn, templates: Callable[[str], list[str]]) -> Pieces:
    """`/prefix/api-root/...` as decoded pieces: a template of a system filled with hostile
    segments or, sometimes, hostile segments only; now and then a hostile prefix."""
    system = draw(st.sampled_from(sorted(PREFIXES)))
    choices = templates(system)
    parts: list[str] = []
    from_template = draw(st.integers(0, 9)) > 0
    if choices and from_template:
        for part in draw(st.sampled_from(choices)).split("/")[1:]:
            parts.append(draw(segment) if part.startswith("{") else part)
    else:
        parts = draw(st.lists(segment, max_size=6))
    head = (PREFIXES[system] + API_ROOTS[system]).split("/")[1:]
    if draw(st.integers(0, 19)) == 0:
        head[draw(st.integers(0, len(head) - 1))] = draw(segment)
    return system, (*head, *parts), draw(st.integers(0, 3 ** 12))


def raw_variants(pieces: Pieces) -> list[bytes]:
    """Each piece raw, each encoded, each fully encoded, and a mix (base-3 digits of the mask).
    A raw piece keeps any "/" it has: that makes more segments, as a client would."""
    _, parts, mask = pieces
    mixed = []
    for part in parts:
        mixed.append(encode(part, mask % 3))
        mask //= 3
    out = ["/" + "/".join(encode(p, how) for p in parts) for how in (0, 1, 2)]
    return [p.encode("utf-8") for p in [*out, "/" + "/".join(mixed)]]


def catalog_templates(system: str) -> list[str]:
    return [op.template for op in CATALOGS[system].operations]


def route_templates(system: str) -> list[str]:
    return [r.template for r in upstream_routes(system)]


def budget_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def run_counted(examples: int, cases: int, strategy: st.SearchStrategy[Pieces],
                check: Callable[[bytes, str], None], methods: tuple[str, ...] = METHODS) -> None:
    """Run `check` on every raw variant x method of `examples` generated paths; at least
    `cases` cases must have been checked."""
    count = 0

    @budget_settings(examples)
    @given(strategy)
    def prop(pieces: Pieces) -> None:
        nonlocal count
        for raw in raw_variants(pieces):
            for method in methods:
                count += 1
                check(raw, method)

    prop()
    assert count >= cases


def test_catalog_requests_reach_the_same_operation_upstream() -> None:
    run_counted(3_000, 90_000, path_pieces(catalog_templates), check_one_meaning)


def test_upstream_routes_never_hide_behind_a_catalog_operation() -> None:
    # Requests shaped like every upstream route, most of them outside the catalog.
    run_counted(3_000, 90_000, path_pieces(route_templates), check_one_meaning)


def test_canonical_path_is_idempotent_and_matches_the_upstream_decoding() -> None:
    run_counted(5_000, 20_000, st.one_of(path_pieces(catalog_templates),
                                         path_pieces(route_templates)),
                check_canonical, methods=("GET",))


def test_canonical_path_refuses_or_keeps_arbitrary_bytes() -> None:
    count = 0

    @budget_settings(10_000)
    @given(st.binary(max_size=40))
    def prop(tail: bytes) -> None:
        nonlocal count
        count += 1
        check_canonical(b"/" + tail, "GET")

    prop()
    assert count >= 10_000


def test_every_catalog_operation_is_a_route_of_its_upstream() -> None:
    for system, catalog in CATALOGS.items():
        routes = {(r.method, r.template) for r in upstream_routes(system)}
        for op in catalog.operations:
            assert (op.method, op.template) in routes, f"{system}: {op.name} {op.method} " \
                f"{op.template} is not a route of the upstream"


# Found by the properties above (2026-11-24): Airflow registers these routes before the ones
# orchgate's catalog picks for the same path, so the upstream would run another operation.
SHADOWED = [
    ("GET", b"/airflow/api/v2/dags/d/dagRuns/r/taskInstances/t/state-store/dependencies"),
    ("GET", b"/airflow/api/v2/dags/d/dagRuns/r/taskInstances/t/externalLogUrl/dependencies"),
]


def test_routes_the_properties_found_shadowed() -> None:
    for method, raw in SHADOWED:
        check_one_meaning(raw, method)
