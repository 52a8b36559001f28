"""proxy.audit: the hash chain, signed checkpoints, rotation, recovery, group commit, verify."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from proxy.audit import sinks
from proxy.audit.chain import (
    GENESIS,
    Chain,
    Signer,
    canonical,
    digest,
    generate_key,
    load_public_key,
)
from proxy.audit.files import trail_files
from proxy.audit.record import _now as record_time
from proxy.audit.record import record as build_record
from proxy.audit.sinks import AuditLog, AuditUnavailable
from proxy.audit.verify import Report, verify
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.identity import Principal
from proxy.policy import Decision
from proxy.policy.model import Rule
from proxy.settings import AuditSettings


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoint.key"
    generate_key(path)
    return path


def settings(tmp_path: Path, key: Path | None = None, **kw: Any) -> AuditSettings:
    return AuditSettings(file=tmp_path / "audit.jsonl", stdout=False,
                         checkpoint_key_file=key, **kw)


def request(i: int, event: str = "request") -> dict[str, Any]:
    return {"schema": "orchgate.audit/1", "event": event, "request_id": f"r-{i}",
            "principal": {"sub": "alice"}, "status": 200}


def write_trail(tmp_path: Path, key: Path | None, n: int = 20, **kw: Any) -> Path:
    audit = AuditLog(settings(tmp_path, key, **kw))
    try:
        for i in range(n):
            audit.write(request(i))
    finally:
        audit.close()
    return tmp_path / "audit.jsonl"


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def check(path: Path, key: Path, **kw: Any) -> Report:
    return verify([path], load_public_key(key), **kw)


def test_records_are_numbered_and_linked(tmp_path: Path) -> None:
    records = read(write_trail(tmp_path, None, 3))

    assert [r["seq"] for r in records] == [1, 2, 3, 4]  # a start record, then three
    assert records[0]["event"] == "start" and records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    assert all(r["hash"] == digest(r) for r in records)


def test_checkpoints_are_signed_every_n_records_and_at_stop(tmp_path: Path, key: Path) -> None:
    path = write_trail(tmp_path, key, 10, checkpoint_every=4)
    records = read(path)

    checkpoints = [r for r in records if r["event"] == "checkpoint"]
    assert [c["from_seq"] for c in checkpoints] == [1, 6, 11]
    assert records[-1]["event"] == "checkpoint"  # the stop sealed the tail
    report = check(path, key)
    assert report.ok, report.render()
    assert report.checkpoints == 3


def test_checkpoints_fall_every_n_records_when_records_are_written_together(
        tmp_path: Path, key: Path) -> None:
    # Outcome records waiting for one write are sealed in runs (audit/sinks.py); a run ends
    # where a checkpoint is due, so the checkpoints fall where they fall record by record.
    audit = AuditLog(settings(tmp_path, key, checkpoint_every=4))

    async def together() -> None:
        for i in range(10):
            ctx = RequestContext(f"r-{i}", "GET", "/airflow/api/v2/dags", b"", "::1", "curl/8")
            ctx.status, ctx.answered = 200, (1_700_000_000_000_000_000, 1.0)
            audit.write_later(build_record, ctx)
        await turn_ends()
    try:
        asyncio.run(together())
    finally:
        audit.close()
    records = read(tmp_path / "audit.jsonl")

    assert [r["event"] for r in records] == (
        ["start"] + ["request"] * 3 + ["checkpoint"] + ["request"] * 4 + ["checkpoint"]
        + ["request"] * 3 + ["checkpoint"])
    assert [c["from_seq"] for c in records if c["event"] == "checkpoint"] == [1, 6, 11]
    report = check(tmp_path / "audit.jsonl", key)
    assert report.ok and report.checkpoints == 3, report.render()


def test_a_restart_continues_the_chain(tmp_path: Path, key: Path) -> None:
    write_trail(tmp_path, key, 3)
    path = write_trail(tmp_path, key, 3)

    seqs = [r["seq"] for r in read(path)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert check(path, key).ok


def test_rotation_by_size_keeps_one_chain_over_the_files(tmp_path: Path, key: Path) -> None:
    path = write_trail(tmp_path, key, 60, rotate_bytes=2000, checkpoint_every=1000)

    files = trail_files([path])
    assert len(files) > 3
    for rotated in files[:-1]:
        assert read(rotated)[-1]["event"] == "checkpoint"  # each rotated file ends signed
    report = check(path, key)
    assert report.ok, report.render()
    assert report.records == read(files[-1])[-1]["seq"]


def test_a_torn_last_line_is_reported_as_a_crash_and_the_chain_goes_on(
        tmp_path: Path, key: Path) -> None:
    path = write_trail(tmp_path, key, 5)
    with path.open("ab") as f:
        f.write(b'{"schema":"orchgate.audit/1","event":"intent","request_id":"r-to')

    report = check(path, key)
    assert report.ok and report.torn == ["audit.jsonl:" + str(len(read_lines(path)))]

    write_trail(tmp_path, key, 2)  # restarted after the crash
    report = check(path, key)
    assert report.ok, report.render()
    assert len(report.torn) == 1 and len(trail_files([path])) == 2
    assert "torn last line" in read(path)[0]["recovered"]


def outage(audit: AuditLog, monkeypatch: pytest.MonkeyPatch, fail: Callable[[], object], *,
           before: list[int], lost: list[int], after: int) -> None:
    """Write `before`; `fail()` breaks the trail for the records `lost`, each counted; once
    mended (monkeypatch undone), `after` is written and the trail is healthy again. Closes
    `audit`."""
    async def turns() -> None:
        for i in before:
            audit.write(request(i), soon=True)
        await turn_ends()
        fail()
        for i in lost:
            audit.write(request(i), soon=True)
        await turn_ends()
        monkeypatch.undo()
        assert not audit.healthy and audit.failures == len(lost)
        audit.write(request(after), soon=True)
        await turn_ends()
        assert audit.healthy
    try:
        asyncio.run(turns())
    finally:
        audit.close()


def assert_whole_trail(path: Path, key: Path, request_ids: list[str]) -> None:
    """The trail (rotated files included) holds the records of these requests, in this order,
    numbered without a gap, and verifies."""
    records = [r for f in trail_files([path]) for r in read(f)]
    assert [r.get("request_id") for r in records if r["event"] == "request"] == request_ids
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # no gap
    report = check(path, key)
    assert report.ok, report


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


# -- tampering: each caught, with its seq ----------------------------------------------------


@pytest.fixture
def trail(tmp_path: Path, key: Path) -> Path:
    return write_trail(tmp_path, key, 30, checkpoint_every=10,
                       checkpoint_file=tmp_path / "checkpoints.jsonl")


def test_an_edited_record_is_caught(trail: Path, key: Path) -> None:
    records = read(trail)
    records[7]["status"] = 500
    rewrite(trail, records)

    report = check(trail, key)
    assert not report.ok and report.seq == 8 and "edited" in str(report.problem)


def test_an_edit_with_every_hash_recomputed_is_caught_by_the_next_checkpoint(
        trail: Path, key: Path) -> None:
    records = read(trail)
    records[3]["decision"] = "allow"
    chain = Chain()
    for r in records:  # the forger rewrites every later hash, but cannot sign
        signature = r.pop("signature", None)
        key_id = r.pop("key_id", None)
        for f in ("seq", "prev", "hash"):
            r.pop(f)
        chain.seal(r)
        if signature is not None:
            r["signature"], r["key_id"] = signature, key_id
            r["hash"] = digest(r)
            chain.head = r["hash"]
    rewrite(trail, records)

    report = check(trail, key)
    first_checkpoint = next(r["seq"] for r in records if r["event"] == "checkpoint")
    assert not report.ok and report.seq == first_checkpoint
    assert "signature does not verify" in str(report.problem)


def test_a_deleted_record_is_caught(trail: Path, key: Path) -> None:
    records = read(trail)
    del records[11]
    rewrite(trail, records)

    report = check(trail, key)
    assert not report.ok and report.seq == 12 and "deleted" in str(report.problem)


def test_reordered_records_are_caught(trail: Path, key: Path) -> None:
    records = read(trail)
    records[4], records[5] = records[5], records[4]
    rewrite(trail, records)

    report = check(trail, key)
    assert not report.ok and report.seq == 5 and "reordered" in str(report.problem)


def test_a_truncated_trail_is_caught_by_the_second_sink(trail: Path, key: Path,
                                                        tmp_path: Path) -> None:
    records = read(trail)
    rewrite(trail, records[:15])  # cut at a line boundary: the chain itself looks whole

    assert check(trail, key).ok
    report = check(trail, key, checkpoints=tmp_path / "checkpoints.jsonl")
    assert not report.ok and report.seq == 16 and "truncated" in str(report.problem)


def test_a_forged_checkpoint_is_caught(trail: Path, key: Path) -> None:
    records = read(trail)
    index = next(i for i, r in enumerate(records) if r["event"] == "checkpoint")
    forged = Signer(Ed25519PrivateKey.generate())
    cp = records[index]
    del cp["signature"], cp["hash"]
    cp["key_id"] = Signer.from_file(key).key_id  # claims the real key
    from proxy.audit.chain import signed_bytes
    cp["signature"] = forged.sign(signed_bytes(cp))
    cp["hash"] = digest(cp)
    for later in records[index + 1:]:  # and relinks the chain after it
        later["prev"] = records[records.index(later) - 1]["hash"]
        later.pop("hash")
        later["hash"] = digest(later)
    rewrite(trail, records)

    report = check(trail, key)
    assert not report.ok and report.seq == cp["seq"] and "forged" in str(report.problem)


def test_a_garbled_line_in_the_middle_is_tampering_not_a_torn_tail(trail: Path,
                                                                   key: Path) -> None:
    lines = trail.read_bytes().splitlines(keepends=True)
    lines[6] = lines[6][:40] + b"\n"
    trail.write_bytes(b"".join(lines))

    report = check(trail, key)
    assert not report.ok and report.seq == 7 and report.torn == []


# -- durability and failure ------------------------------------------------------------------


def test_concurrent_write_ahead_records_share_fsyncs(tmp_path: Path) -> None:
    audit = AuditLog(settings(tmp_path))

    async def burst() -> list[int]:
        return await asyncio.gather(*(audit.write_ahead(request(i, "intent"))
                                      for i in range(200)))
    try:
        seqs = asyncio.run(burst())
    finally:
        audit.close()

    assert sorted(seqs) == list(range(2, 202))
    assert audit.fsynced_records == 200
    assert 1 <= audit.fsyncs < 200  # group commit: one fsync served many requests
    assert len(read(tmp_path / "audit.jsonl")) == 201


def test_a_sink_that_cannot_write_refuses_and_counts(tmp_path: Path) -> None:
    audit = AuditLog(AuditSettings(file=Path("/dev/full"), stdout=False))
    try:
        with pytest.raises(AuditUnavailable):
            audit.append(request(1))
        assert audit.write(request(2)) is None  # the outcome path never raises
        with pytest.raises(AuditUnavailable):
            asyncio.run(audit.write_ahead(request(3, "intent")))
    finally:
        audit.close()

    assert audit.failures == 4  # the start record too
    assert not audit.healthy and "No space left" in str(audit.last_error)


def test_refusing_reads_is_a_choice() -> None:
    serve = AuditLog(AuditSettings(file=Path("/dev/full"), stdout=False))
    refuse = AuditLog(AuditSettings(file=Path("/dev/full"), stdout=False,
                                    reads_on_failure="refuse"))
    try:
        assert not serve.healthy and not refuse.healthy
        assert not serve.refuses_reads()
        assert refuse.refuses_reads()
    finally:
        serve.close()
        refuse.close()


def test_the_checkpoint_key_never_enters_the_trail(tmp_path: Path, key: Path) -> None:
    path = write_trail(tmp_path, key, 5, checkpoint_every=2)

    pem = key.read_text()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    assert body and body not in path.read_text()


# -- outcome records: one write(2) for the records of up to 5 ms ---------------------------------


def count_writes(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[int]:
    """Record the size of every os.write the trail makes (optionally failing them)."""
    sizes: list[int] = []
    real = os.write

    def write(fd: int, data: Any) -> int:
        sizes.append(len(data))
        if fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)
    return sizes


async def turn_ends() -> None:
    """Let the event loop run past the write of the records waiting (its timer is due before
    this sleep's)."""
    await asyncio.sleep(sinks.OUTCOME_DELAY * 5)


def test_outcome_records_made_together_share_one_write(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    audit = AuditLog(settings(tmp_path))
    path = tmp_path / "audit.jsonl"

    async def turn() -> tuple[int, list[int]]:
        sizes = count_writes(monkeypatch)
        seqs = [audit.write(request(i), soon=True) for i in range(5)]
        assert seqs == [None] * 5  # sealed when they are written: no seq yet
        lines_before = len(read(path))  # not on file yet: the write is not due
        await turn_ends()
        return lines_before, sizes
    try:
        lines_before, sizes = asyncio.run(turn())
    finally:
        audit.close()
        monkeypatch.undo()

    assert lines_before == 1  # the start record
    assert len(sizes) == 1  # five records, one write(2)
    records = read(path)[1:]
    assert [(r.get("request_id"), r["seq"]) for r in records] == \
        [(f"r-{i}", i + 2) for i in range(5)]  # sealed in the order they were written
    assert verify([path]).ok


def test_records_of_several_loop_turns_wait_for_one_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "OUTCOME_DELAY", 60.0)  # no write comes due in this test
    audit = AuditLog(settings(tmp_path))
    path = tmp_path / "audit.jsonl"

    async def turns() -> tuple[int, list[int]]:
        sizes = count_writes(monkeypatch)
        for i in range(3):
            audit.write(request(i), soon=True)
            await asyncio.sleep(0)  # the loop goes round: the records still wait
            await asyncio.sleep(0)
        lines_before = len(read(path))
        audit.flush()  # what the due write does
        return lines_before, sizes
    try:
        lines_before, sizes = asyncio.run(turns())
    finally:
        audit.close()

    assert lines_before == 1  # the start record only
    assert sizes == [sizes[0]]  # three turns' records, one write(2)
    assert [r.get("request_id") for r in read(path)[1:]] == ["r-0", "r-1", "r-2"]


def test_a_full_batch_of_outcome_records_is_written_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "OUTCOME_DELAY", 60.0)
    audit = AuditLog(settings(tmp_path))
    path = tmp_path / "audit.jsonl"

    async def turn() -> list[int]:
        sizes = count_writes(monkeypatch)
        for i in range(sinks.OUTCOME_BATCH + 1):
            audit.write(request(i), soon=True)
        return sizes
    try:
        writes = len(asyncio.run(turn()))
        on_file = [r.get("request_id") for r in read(path)[1:]]
    finally:
        audit.close()

    assert writes == 1  # the batch, when it was full; the one after it still waits
    assert on_file == [f"r-{i}" for i in range(sinks.OUTCOME_BATCH)]


def test_a_record_left_waiting_by_an_ended_loop_goes_with_the_next_loops_write(
        tmp_path: Path) -> None:
    audit = AuditLog(settings(tmp_path))
    path = tmp_path / "audit.jsonl"

    async def first() -> None:
        audit.write(request(1), soon=True)  # the loop ends before its write is due

    async def second() -> None:
        audit.write(request(2), soon=True)
        await turn_ends()
    try:
        asyncio.run(first())
        asyncio.run(second())
        on_file = [r.get("request_id") for r in read(path)[1:]]
    finally:
        audit.close()

    assert on_file == ["r-1", "r-2"]


def test_a_record_written_at_once_takes_the_waiting_ones_first(tmp_path: Path) -> None:
    audit = AuditLog(settings(tmp_path))
    path = tmp_path / "audit.jsonl"

    async def turn() -> list[str]:
        audit.write(request(1), soon=True)
        audit.write(request(2), soon=True)
        await audit.write_ahead(request(3, "intent"))  # written and fsynced now
        return [str(r.get("request_id")) for r in read(path)]
    try:
        on_file = asyncio.run(turn())
    finally:
        audit.close()

    assert on_file[1:] == ["r-1", "r-2", "r-3"]  # the file's order is the chain's
    assert verify([path]).ok


def test_without_an_event_loop_a_record_is_written_at_once(tmp_path: Path) -> None:
    audit = AuditLog(settings(tmp_path))
    try:
        audit.write(request(1), soon=True)
        assert read(tmp_path / "audit.jsonl")[-1]["request_id"] == "r-1"
    finally:
        audit.close()


def test_a_turn_that_cannot_be_written_is_counted_and_the_chain_stays_whole(
        tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = AuditLog(settings(tmp_path, key))
    # the disk fills up, and has room again
    outage(audit, monkeypatch, lambda: count_writes(monkeypatch, fail=True),
           before=[1], lost=[2, 3], after=4)
    assert_whole_trail(tmp_path / "audit.jsonl", key, ["r-1", "r-4"])


def test_records_waiting_at_close_are_written(tmp_path: Path, key: Path) -> None:
    audit = AuditLog(settings(tmp_path, key))

    async def turn() -> None:
        audit.write(request(1), soon=True)
        audit.close()  # before its write is due: the record is not left behind
        await turn_ends()  # the due write finds nothing to do
    asyncio.run(turn())

    records = read(tmp_path / "audit.jsonl")
    assert [r["event"] for r in records] == ["start", "request", "checkpoint"]
    assert check(tmp_path / "audit.jsonl", key).ok


def _contexts() -> list[RequestContext]:
    """Requests in the record's shapes: refused early, decided, with lineage, notes, created
    ids, a shadow decision."""
    bare = RequestContext("r-1", "GET", "/airflow/api/v2/dags", b"", "127.0.0.1", "curl/8")
    decided = RequestContext("r-2", "POST", "/airflow/api/v2/dags/etl/dagRuns", b"a=1&b=%20",
                             "10.0.0.1", "agent Ünïcode")
    decided.principal = Principal("alice", "http://idp", "user", ("b", "a"), None, 0.0)
    decided.decision = Decision(False, Rule("group:a", "airflow", "etl", Action.RUN, "deny",
                                            "policy.csv:3"), 7, ("team:a",), "group:a")
    decided.workflows, decided.owners, decided.status = ("etl",), ("team:a",), 403
    decided.notes["policy_digest"] = "ab" * 32
    lineage = RequestContext("r-3", "GET", "/prefect/api/flows", b"", "::1", "prefect/3.9.1")
    lineage.parent = {"workflow": "team-a/flow", "system": "prefect", "run": "prefect:f-1"}
    noted = RequestContext("r-4", "GET", "/prefect/api/flows", b"", "::1", "x")
    noted.notes.update({"zeta": 1, "alpha": {"z": 1, "a": 2}, "shadow": {"rule": "s", "d": 1}})
    return [bare, decided, lineage, noted]


@pytest.mark.parametrize("event", ["request", "intent"])
def test_a_sealed_record_line_is_exactly_its_canonical_form(event: str) -> None:
    # record() inserts keys in sorted order so sealing can skip the sort; a line that were not
    # canonical would fail verification, so each shape is held to the canonical form here.
    chain = Chain()
    for ctx in _contexts():
        built = build_record(ctx, event)
        line = chain.seal(built)
        body, _, tail = line.rpartition(b',"hash":')
        parsed = json.loads(line)
        assert body + b"}" == canonical(parsed)
        assert tail == b'"' + parsed["hash"].encode() + b'"}\n'
        assert parsed["hash"] == digest(parsed) and parsed["seq"] == chain.seq
    assert any(build_record(ctx, event).presorted for ctx in _contexts())
    assert not all(build_record(ctx, event).presorted for ctx in _contexts())


def test_an_answered_request_s_record_is_built_when_written_with_its_answer_s_time(
        tmp_path: Path) -> None:
    # The request path only notes when the answer went; the record is built from the context
    # by the due write, with the others waiting (their building, off the request's path, is
    # where the trail's cost went down).
    audit = AuditLog(settings(tmp_path))
    ctx = RequestContext("r-1", "GET", "/airflow/api/v2/dags", b"", "127.0.0.1", "curl/8")
    ctx.status = ctx.upstream_status = 200
    ctx.answered = (1_700_000_000_123_456_789, 12.345)  # noted at the answer: ns, ms
    built: list[str] = []

    def make(source: RequestContext) -> dict[str, Any]:
        built.append(source.request_id)
        return build_record(source)

    async def turn() -> list[str]:
        audit.write_later(make, ctx)
        before = list(built)
        await turn_ends()
        return before
    try:
        built_before = asyncio.run(turn())
    finally:
        audit.close()

    assert built_before == [] and built == ["r-1"]  # built once, by the write
    written = read(tmp_path / "audit.jsonl")[-1]
    assert (written["request_id"], written["status"]) == ("r-1", 200)
    assert written["time"] == "2023-11-14T22:13:20.123+00:00"  # the answer's, not the write's
    assert written["latency_ms"] == 12.345
    assert build_record(ctx, "intent")["time"] != written["time"]  # an intent's time is now
    assert verify([tmp_path / "audit.jsonl"]).ok


def test_a_record_that_cannot_be_built_is_counted_and_the_others_are_written(
        tmp_path: Path, key: Path) -> None:
    audit = AuditLog(settings(tmp_path, key))
    path = tmp_path / "audit.jsonl"

    def make(i: int) -> dict[str, Any]:
        if i == 2:
            raise KeyError("a field the record needs")
        return request(i)

    async def turn() -> None:
        for i in range(1, 4):
            audit.write_later(make, i)
        await turn_ends()
    try:
        asyncio.run(turn())
        assert audit.failures == 1
        assert audit.last_error == "a record could not be built: KeyError"
    finally:
        audit.close()

    assert_whole_trail(path, key, ["r-1", "r-3"])


def test_a_latency_is_recorded_to_the_microsecond() -> None:
    ctx = RequestContext("r-1", "GET", "/", b"", "127.0.0.1", "curl/8")
    ctx.started -= 0.0123456789
    latency = ctx.elapsed_ms()
    assert 12.345 <= latency < 13 and latency == round(latency, 3)


def test_a_turn_that_cannot_be_sealed_counts_every_record_it_lost(
        tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first of the turn's records finds the file due for rotation, and the rename fails:
    # none of the three is sealed, all three are counted, and the chain goes on whole.
    audit = AuditLog(settings(tmp_path, key, rotate_bytes=1))

    def rename(self: Path, target: Path) -> Path:
        raise OSError(errno.EACCES, "Permission denied")

    outage(audit, monkeypatch, lambda: monkeypatch.setattr(Path, "rename", rename),
           before=[], lost=[0, 1, 2], after=3)
    assert_whole_trail(tmp_path / "audit.jsonl", key, ["r-3"])


@pytest.mark.parametrize("failure", ["write", "rename"])
def test_an_intent_that_cannot_be_written_counts_the_records_waiting_before_it(
        tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    # An intent is sealed after the outcome records waiting, in one go: when the write (or the
    # rotation before it) fails, every one of them is lost and counted, the intent refused.
    audit = AuditLog(settings(tmp_path, key, rotate_bytes=1 if failure == "rename" else 10**8))

    def rename(self: Path, target: Path) -> Path:
        raise OSError(errno.EACCES, "Permission denied")

    async def turn() -> None:
        monkeypatch.setattr(sinks, "OUTCOME_DELAY", 60.0)  # they wait for the intent
        for i in range(3):
            audit.write_later(build_record, RequestContext(
                f"r-{i}", "GET", "/airflow/api/v2/dags", b"", "::1", "curl/8"))
        if failure == "write":
            count_writes(monkeypatch, fail=True)
        else:
            monkeypatch.setattr(Path, "rename", rename)
        with pytest.raises(AuditUnavailable):
            await audit.write_ahead(request(3, "intent"))
        assert audit.failures == 4 and not audit.healthy
        monkeypatch.undo()
        await audit.write_ahead(request(4, "intent"))
        assert audit.healthy
    try:
        asyncio.run(turn())
    finally:
        audit.close()
    assert_whole_trail(tmp_path / "audit.jsonl", key, [])  # no outcome record: all lost
    path = tmp_path / "audit.jsonl"
    assert [r["request_id"] for f in trail_files([path]) for r in read(f)
            if "request_id" in r] == ["r-4"]


@hypothesis.settings(max_examples=2000, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), min_size=1,
                max_size=8))
def test_a_records_time_is_the_iso_form_of_its_millisecond(times: list[int]) -> None:
    # The time is formatted a second at a time, the milliseconds added (audit/record.py): held
    # to what datetime writes, in any order of times (a cache must not leak one into another).
    for ns in sorted(times) + times:
        ms = ns // 1_000_000
        iso = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
        assert record_time(ns) == iso
        assert record_time(ns + 1_000_000) == dt.datetime.fromtimestamp(
            (ms + 1) / 1000, dt.UTC).isoformat(timespec="milliseconds")


# -- records sealed while nothing else is under way -------------------------------------------


def test_records_sealed_while_idle_wait_for_their_write_in_the_chain_s_order(
        tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # seal_waiting builds and seals what waits (pipeline.py: when no other request is under
    # way) but writes nothing: the records still share the due write, and whatever comes
    # next — more outcome records, an intent — follows them in the chain and on file.
    audit = AuditLog(settings(tmp_path, key))
    path = tmp_path / "audit.jsonl"

    async def turns() -> tuple[int, int, int]:
        monkeypatch.setattr(sinks, "OUTCOME_DELAY", 60.0)  # no due write in this test
        sizes = count_writes(monkeypatch)
        for i in range(3):
            audit.write(request(i), soon=True)
        audit.seal_waiting()
        sealed_seq, lines = audit.status()["seq"], len(read(path))
        audit.write(request(3), soon=True)
        audit.seal_waiting()
        audit.write(request(4), soon=True)  # still waiting, unsealed, when the intent comes
        await audit.write_ahead(request(5, "intent"))
        return sealed_seq, lines, len(sizes)
    try:
        sealed_seq, lines_on_file, writes = asyncio.run(turns())
    finally:
        audit.close()
        monkeypatch.undo()

    assert sealed_seq == 1 + 3 and lines_on_file == 1  # sealed, not written: only "start"
    assert writes == 1  # the five records and the intent went out in one write
    assert_whole_trail(path, key, ["r-0", "r-1", "r-2", "r-3", "r-4"])
    assert [r["event"] for r in read(path)][-2:] == ["intent", "checkpoint"]


def test_records_sealed_while_idle_and_lost_in_their_write_are_each_counted(
        tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sealed but not on file when the write fails: the chain goes back to the last record on
    # file, each lost record counts, and the trail goes on whole once the disk takes writes.
    audit = AuditLog(settings(tmp_path, key))
    path = tmp_path / "audit.jsonl"

    async def turns() -> None:
        for i in range(3):  # built records: sealed as one run, their lines one item
            ctx = RequestContext(f"r-{i}", "GET", "/airflow/api/v2/dags", b"", "::1", "curl/8")
            ctx.status, ctx.answered = 200, (1_700_000_000_000_000_000, 1.0)
            audit.write_later(build_record, ctx)
        audit.seal_waiting()
        count_writes(monkeypatch, fail=True)
        await turn_ends()
        assert audit.failures == 3 and not audit.healthy
        monkeypatch.undo()
        audit.write(request(3), soon=True)
        audit.seal_waiting()
        await turn_ends()
        assert audit.healthy and audit.failures == 3
    try:
        asyncio.run(turns())
    finally:
        audit.close()

    assert_whole_trail(path, key, ["r-3"])


def test_sealing_while_idle_with_nothing_waiting_changes_nothing(tmp_path: Path) -> None:
    audit = AuditLog(settings(tmp_path))
    try:
        seq = audit.status()["seq"]
        audit.seal_waiting()
        assert audit.status()["seq"] == seq and audit.failures == 0
    finally:
        audit.close()
