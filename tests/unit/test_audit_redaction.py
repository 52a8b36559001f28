"""proxy.audit: redaction of every event, and the JSON-lines audit file."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import CapturingLogger

from proxy.audit.chain import digest
from proxy.audit.logging import REDACTED, json_logger, redact, secret_key
from proxy.audit.record import record as build_record
from proxy.audit.sinks import AuditLog
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.identity import Principal
from proxy.policy import Decision
from proxy.policy.model import Rule
from proxy.settings import AuditSettings

# Shaped like real tokens, but signed by nobody.
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
       ".eyJzdWIiOiJhbGljZSIsImF1ZCI6Im9yY2hnYXRlIn0"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU")
OPAQUE = "opaque-credential-value-1234"


def scrubbed(**event: Any) -> dict[str, Any]:
    return dict(redact(None, "info", event))


@pytest.mark.parametrize("key", [
    "authorization", "Authorization", "AUTHORIZATION", "proxy_authorization", "cookie",
    "Set-Cookie", "token", "access_token", "refresh_token", "id_token", "secret",
    "client_secret", "password", "PASSWORD", "db_password", "api_key", "api-key", "apikey",
    "X-Api-Key", "auth_string", "AUTH-STRING", "authString", "credential",
])
def test_values_of_secret_keys_are_removed(key: str) -> None:
    out = scrubbed(event="request", **{key: OPAQUE})

    assert out[key] == REDACTED
    assert out["event"] == "request"


@pytest.mark.parametrize("value", [
    OPAQUE, {"nested": OPAQUE}, [OPAQUE, OPAQUE], 12345, None,
])
def test_the_whole_value_goes_whatever_its_type(value: Any) -> None:
    assert scrubbed(password=value)["password"] == REDACTED


def test_secret_keys_are_removed_at_any_depth() -> None:
    out = scrubbed(event="upstream_call", request={
        "headers": {"Authorization": f"Bearer {OPAQUE}", "Accept": "application/json"},
        "body": [{"name": "deploy", "job_variables": {"env": {"DB_PASSWORD": OPAQUE}}}],
        "params": ({"api_key": OPAQUE}, "plain"),
    })

    assert out["request"] == {
        "headers": {"Authorization": REDACTED, "Accept": "application/json"},
        "body": [{"name": "deploy", "job_variables": {"env": {"DB_PASSWORD": REDACTED}}}],
        "params": [{"api_key": REDACTED}, "plain"],
    }


def test_ordinary_fields_are_untouched() -> None:
    event = {"event": "request", "method": "POST", "path": "/airflow/api/v2/dags/etl/dagRuns",
             "status": 200, "latency_ms": 12.5, "workflows": ["etl"], "decision": "allow",
             "principal": {"sub": "alice", "groups": ["team-a-readers"]},
             "note": "basic auth is refused"}

    assert scrubbed(**event) == event


@pytest.mark.parametrize(("text", "expected"), [
    (f"/api/v2/dags?access={JWT}", f"/api/v2/dags?access={REDACTED}"),
    (f"got {JWT} from the client", f"got {REDACTED} from the client"),
    (f"Bearer {OPAQUE}", f"Bearer {REDACTED}"),
    (f"header was 'bearer {OPAQUE}' here", f"header was 'bearer {REDACTED}' here"),
    ("Authorization: Basic YWRtaW46c2VjcmV0LXBhc3M=", f"Authorization: Basic {REDACTED}"),
    (f"BASIC   {OPAQUE}", f"BASIC {REDACTED}"),
    (f"Bearer {JWT}", f"Bearer {REDACTED}"),
])
def test_credentials_inside_other_strings_are_masked(text: str, expected: str) -> None:
    out = scrubbed(event="upstream_error", detail=text, nested={"items": [text]})

    assert out["detail"] == expected
    assert out["nested"] == {"items": [expected]}
    assert OPAQUE not in json.dumps(out)


def test_a_jwt_as_the_event_message_is_masked() -> None:
    assert scrubbed(event=f"token {JWT} rejected")["event"] == f"token {REDACTED} rejected"


def test_redact_runs_as_a_structlog_processor() -> None:
    capture = CapturingLogger()
    logger = structlog.wrap_logger(capture, processors=[redact])

    logger.info("request", authorization=f"Bearer {OPAQUE}", query=f"x={JWT}", user="alice")

    [call] = capture.calls
    assert call.method_name == "info"
    assert call.kwargs == {"event": "request", "authorization": REDACTED,
                           "query": f"x={REDACTED}", "user": "alice"}


@pytest.fixture
def clean_contextvars() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.mark.usefixtures("clean_contextvars")
def test_context_bound_fields_cannot_bypass_redaction() -> None:
    stream = io.StringIO()
    log = json_logger([stream], "test")
    structlog.contextvars.bind_contextvars(request_id="r-1", cookie=f"_token={JWT}")

    log.info("request", detail=f"Bearer {OPAQUE}")

    line = json.loads(stream.getvalue())
    assert line["request_id"] == "r-1"
    assert line["cookie"] == REDACTED
    assert line["detail"] == f"Bearer {REDACTED}"
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert JWT not in stream.getvalue() and OPAQUE not in stream.getvalue()


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "orchgate.audit/0", "event": "request", "request_id": "r-1",
        "principal": {"sub": "alice", "groups": ["team-a-readers"]}, "system": "airflow",
        "method": "GET", "path": "/airflow/api/v2/dags", "query": "", "decision": "allow",
        "rule": "policies/policy.csv:15", "status": 200,
    }
    return {**base, **overrides}


def requests_in(text: str) -> list[dict[str, Any]]:
    """The request records of a trail, one JSON object a line. The sink adds records of its
    own (`start`, checkpoints) and chain fields to each line; those are not looked at here."""
    lines = [json.loads(line) for line in text.splitlines()]
    return [line for line in lines if line["event"] == "request"]


def written(line: dict[str, Any], record: dict[str, Any]) -> bool:
    """Every field of the record is in the line, unchanged (the schema may be restamped)."""
    return all(line.get(k) == v for k, v in record.items() if k != "schema")


@pytest.fixture
def audit_file(tmp_path: Path) -> Iterator[tuple[Path, AuditLog]]:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=path, stdout=False))
    yield path, audit
    audit.close()


def test_the_audit_file_gets_one_json_line_per_record(
        audit_file: tuple[Path, AuditLog]) -> None:
    path, audit = audit_file
    first, second = record(request_id="r-1"), record(request_id="r-2", status=403,
                                                     decision="deny")

    audit.write(first)
    audit.write(second)

    lines = requests_in(path.read_text(encoding="utf-8"))
    assert [line["request_id"] for line in lines] == ["r-1", "r-2"]
    assert written(lines[0], first) and written(lines[1], second)


def test_the_audit_file_is_appended_to_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for request_id in ("r-1", "r-2"):
        audit = AuditLog(AuditSettings(file=path, stdout=False))
        audit.write(record(request_id=request_id))
        audit.close()

    lines = requests_in(path.read_text(encoding="utf-8"))
    assert [line["request_id"] for line in lines] == ["r-1", "r-2"]


def test_audit_records_pass_through_redaction(audit_file: tuple[Path, AuditLog]) -> None:
    path, audit = audit_file

    audit.write(record(query=f"token={JWT}&limit=5",
                       notes={"upstream_error": f"Basic {OPAQUE}"},
                       headers={"Cookie": "_token=abc", "Accept": "*/*"}))

    text = path.read_text(encoding="utf-8")
    [line] = requests_in(text)
    assert line["query"] == f"token={REDACTED}&limit=5"
    assert line["notes"] == {"upstream_error": f"Basic {REDACTED}"}
    assert line["headers"] == {"Cookie": REDACTED, "Accept": "*/*"}
    assert JWT not in text and OPAQUE not in text and "_token=abc" not in text


def test_the_audit_log_writes_to_stdout_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditSettings(file=None, stdout=True))
    try:
        audit.write(record(query=f"t={JWT}"))
    finally:
        audit.close()

    out = capsys.readouterr().out
    assert out.endswith("\n")
    [line] = requests_in(out)
    assert line["query"] == f"t={REDACTED}"
    assert JWT not in out


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)


def full_context() -> RequestContext:
    """A request that got everywhere: every field of the record set."""
    ctx = RequestContext("r-1", "POST", "/airflow/api/v2/dags/etl/dagRuns", b"x=1",
                         "127.0.0.1:5000", "curl/8")
    ctx.principal = Principal("alice", "http://idp", "user", ("team-a",), "cli", 0.0)
    ctx.decision = Decision(True, Rule("group:team-a", "airflow", "etl", Action.RUN, "allow",
                                       "policy.csv:3"), 7)
    ctx.parent = {"run": "prefect:f-1", "system": "prefect", "workflow": "team-a/flow"}
    ctx.notes = {"websocket": {"frames_in": 3, "session_token": OPAQUE}, "api_key": OPAQUE,
                 "upstream_error": f"Bearer {OPAQUE}"}
    return ctx


def test_an_audit_records_key_names_never_name_a_credential() -> None:
    # The trail does not walk an AuditRecord's keys (audit/sinks.py): they are the schema's,
    # and the notes are scrubbed where the record is built.
    built = build_record(full_context())
    assert [k for k in _keys(build_record(full_context(), "intent")) if secret_key(k)] == []
    assert [k for k in _keys(built) if secret_key(k)] == ["session_token", "api_key"]
    assert built["notes"] == {"websocket": {"frames_in": 3, "session_token": REDACTED},
                              "api_key": REDACTED, "upstream_error": f"Bearer {REDACTED}"}


def test_a_credential_in_an_audit_records_value_is_masked_in_the_line(
        audit_file: tuple[Path, AuditLog]) -> None:
    path, audit = audit_file
    ctx = full_context()
    ctx.query = f"token={JWT}".encode()
    ctx.user_agent = f"agent Basic {OPAQUE}"

    audit.write(build_record(ctx))

    text = path.read_text(encoding="utf-8")
    [line] = requests_in(text)
    assert line["query"] == f"token={REDACTED}"
    assert line["user_agent"] == f"agent Basic {REDACTED}"
    assert JWT not in text and OPAQUE not in text


# Every character `\s` matches between "Bearer"/"Basic" and the credential, as JSON writes it:
# a space, an escape (tab, newline, the other ASCII separators) or non-ASCII bytes (a
# no-break space, the ideographic space). The line's first look must send each to the walk.
@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f",
                                   "\x85", "\xa0", "\u2003", "\u3000"])
@pytest.mark.parametrize("word", ["Bearer", "basic", "BeArEr"])
def test_a_credential_after_any_whitespace_is_masked(
        audit_file: tuple[Path, AuditLog], word: str, space: str) -> None:
    path, audit = audit_file
    ctx = full_context()
    ctx.user_agent = f"{word}{space}{OPAQUE}"

    audit.write(build_record(ctx))

    [line] = requests_in(path.read_text(encoding="utf-8"))
    assert line["user_agent"] == f"{word} {REDACTED}"
    assert OPAQUE not in path.read_text(encoding="utf-8")
    assert OPAQUE not in json.dumps(scrubbed(event="call", agent=ctx.user_agent))


def plain_context(i: int) -> RequestContext:
    """An answered read with nothing credential-shaped in it."""
    ctx = RequestContext(f"r-{i}", "GET", f"/airflow/api/v2/dags/etl_{i}", b"limit=5",
                         "127.0.0.1", "curl/8")
    ctx.principal = Principal("alice", "http://idp", "user", ("team-a",), None, 0.0)
    ctx.status = ctx.upstream_status = 200
    ctx.answered = (1_700_000_000_000_000_000 + i, 1.5)
    return ctx


@pytest.mark.parametrize("where", ["query", "user_agent", "path"])
def test_records_written_together_are_checked_together_and_a_credential_in_one_is_masked(
        audit_file: tuple[Path, AuditLog], where: str) -> None:
    # Outcome records that wait for one write are sealed in a run and their lines checked in
    # one pass (audit/sinks.py); a hit seals the run again, record by record.
    path, audit = audit_file
    contexts = [plain_context(i) for i in range(6)]
    dirty = contexts[3]
    if where == "query":
        dirty.query = f"token={JWT}".encode()
    elif where == "user_agent":
        dirty.user_agent = f"agent Bearer {OPAQUE}"
    else:
        dirty.path = f"/airflow/api/v2/dags/{JWT}"

    async def together() -> None:
        for ctx in contexts:
            audit.write_later(build_record, ctx)
        await asyncio.sleep(0.05)  # past the write that was due
    asyncio.run(together())

    text = path.read_text(encoding="utf-8")
    assert JWT not in text and OPAQUE not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [r["request_id"] for r in lines if r["event"] == "request"] == [
        f"r-{i}" for i in range(6)]
    for before, after in itertools.pairwise(lines):
        assert after["prev"] == before["hash"] and after["seq"] == before["seq"] + 1
    assert all(r["hash"] == digest(r) for r in lines)
    by_id = {r["request_id"]: r for r in lines if r["event"] == "request"}
    assert REDACTED in by_id["r-3"][where]
    for i in (0, 1, 2, 4, 5):
        assert by_id[f"r-{i}"]["query"] == "limit=5"
        assert REDACTED not in json.dumps(by_id[f"r-{i}"])
