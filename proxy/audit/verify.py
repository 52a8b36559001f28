"""`orchgate audit verify FILE…`: is the trail the one orchgate wrote?

Walks every record in chain order (files ordered by their first seq) and stops at the first
problem, naming its seq: a line that is not a record (edited), a hash that does not match
(edited), a `prev` that is not the previous hash (a record deleted, inserted or rewritten
before it), a seq out of order (reordered) or missing (deleted), a checkpoint whose
signature does not verify (forged — or the chain before it was rewritten). A torn last line
of a file — a crash in the middle of a write — is reported as such, not as tampering. With
`--checkpoints`, the second sink's copies must all be in the trail: a trail cut short
(truncated) is caught there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.audit.chain import GENESIS, digest, signature_valid
from proxy.audit.files import lines, trail_files


@dataclass
class Report:
    ok: bool = True
    problem: str | None = None  # the first one
    seq: int | None = None  # where it is
    records: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    files: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)  # "file:line" of torn last lines
    notes: list[str] = field(default_factory=list)
    open_intents: list[int] = field(default_factory=list)  # intents with no outcome record

    def fail(self, seq: int | None, problem: str) -> Report:
        if self.ok:
            self.ok, self.seq, self.problem = False, seq, problem
        return self

    def render(self) -> str:
        out = [f"files: {', '.join(self.files) or '(none)'}",
               f"records: {self.records} (last seq {self.last_seq}), "
               f"signed checkpoints: {self.checkpoints}"]
        out += [f"torn last line (a crash while writing, not tampering): {t}"
                for t in self.torn]
        if self.open_intents:
            shown = ", ".join(map(str, self.open_intents[:10]))
            out.append(f"intents without an outcome (in flight when the trail stopped): "
                       f"{len(self.open_intents)} (seq {shown}"
                       f"{', …' if len(self.open_intents) > 10 else ''})")
        out += [f"note: {n}" for n in self.notes]
        out.append("OK: the chain is intact" if self.ok
                   else f"FAILED at seq {self.seq}: {self.problem}")
        return "\n".join(out)


def verify(paths: Iterable[Path], public_key: Ed25519PublicKey | None = None,
           checkpoints: Path | None = None) -> Report:
    report = Report()
    files = trail_files(paths)
    report.files = [str(p) for p in files]
    head: str | None = None
    expected: int | None = None
    signed_through = 0
    intents: dict[str, int] = {}
    seen_checkpoints: dict[int, str] = {}
    for index, path in enumerate(files):
        for line in lines(path):
            where = f"{path.name}:{line.number}"
            record = line.record
            if record is None:
                if line.last and not line.terminated:
                    report.torn.append(where)
                    continue
                return report.fail(None if expected is None else expected,
                                   f"{where} is not a record (edited or corrupted)")
            seq = record.get("seq")
            if not isinstance(seq, int):
                report.notes.append(f"{where}: a record without a chain (schema v0) skipped")
                continue
            if expected is None:
                if seq != 1:
                    report.notes.append(f"the trail given starts at seq {seq}: earlier files "
                                        "were not given (or were removed)")
                elif record.get("prev") != GENESIS:
                    return report.fail(seq, f"{where}: the first record does not start the "
                                            "chain")
                expected, head = seq, str(record.get("prev"))
            if seq != expected:
                later = _seq_later(files, index, path, line.number, expected)
                what = ("reordered: seq {e} comes after seq {s}" if later
                        else "deleted: seq {e} is missing (the next record is seq {s})")
                return report.fail(expected, f"{where}: " + what.format(e=expected, s=seq))
            if record.get("hash") != digest(record):
                return report.fail(seq, f"{where}: edited (its hash does not match its "
                                        "content)")
            if record.get("prev") != head:
                return report.fail(seq, f"{where}: the previous record was changed or removed "
                                        "(prev does not match)")
            if record.get("event") == "checkpoint":
                problem = _check_checkpoint(record, public_key)
                if problem is not None:
                    return report.fail(seq, f"{where}: {problem}")
                report.checkpoints += 1
                signed_through = seq
                seen_checkpoints[seq] = str(record["hash"])
            _track_intents(record, intents)
            report.records += 1
            report.last_seq = seq
            head = str(record["hash"])
            expected = seq + 1
    report.open_intents = sorted(intents.values())
    if public_key is None and report.checkpoints:
        report.notes.append("checkpoint signatures not verified: give --public-key")
    if report.last_seq > signed_through:
        report.notes.append(f"records after seq {signed_through} are not yet covered by a "
                            "signed checkpoint (only by the hash chain)")
    if checkpoints is not None:
        _compare_second_sink(report, checkpoints, seen_checkpoints, public_key)
    return report


def _seq_later(files: list[Path], index: int, path: Path, number: int, wanted: int) -> bool:
    for i in range(index, len(files)):
        for line in lines(files[i]):
            if i == index and line.number <= number:
                continue
            if line.record is not None and line.record.get("seq") == wanted:
                return True
    return False


def _check_checkpoint(record: dict[str, Any], public_key: Ed25519PublicKey | None
                      ) -> str | None:
    if not record.get("signature"):
        return "a checkpoint without a signature (forged)"
    if public_key is not None and not signature_valid(record, public_key):
        return ("forged checkpoint, or the chain before it was rewritten: its signature does "
                f"not verify (it covers seq {record.get('from_seq')}…{record['seq'] - 1})")
    return None


def _track_intents(record: dict[str, Any], intents: dict[str, int]) -> None:
    request_id = record.get("request_id")
    if not isinstance(request_id, str):
        return
    if record.get("event") == "intent":
        intents[request_id] = record["seq"]
    elif record.get("event") == "request":
        intents.pop(request_id, None)


def _compare_second_sink(report: Report, path: Path, seen: dict[int, str],
                         public_key: Ed25519PublicKey | None) -> None:
    for line in lines(path):
        copy = line.record
        if copy is None or not isinstance(copy.get("seq"), int):
            if line.last and not line.terminated:
                report.torn.append(f"{path.name}:{line.number}")
                continue
            report.fail(None, f"{path.name}:{line.number} is not a checkpoint")
            return
        seq = copy["seq"]
        if public_key is not None and not signature_valid(copy, public_key):
            report.fail(seq, f"{path.name}: forged checkpoint copy at seq {seq}")
            return
        if seq > report.last_seq:
            report.fail(report.last_seq + 1,
                        f"truncated: the trail ends at seq {report.last_seq}, but the second "
                        f"sink holds a checkpoint at seq {seq}")
            return
        if seq in seen and seen[seq] != copy.get("hash"):
            report.fail(seq, f"the checkpoint at seq {seq} differs from its copy in "
                             f"{path.name}")
            return
        if seq not in seen and seq >= _first(report):
            report.fail(seq, f"the checkpoint at seq {seq} (in {path.name}) is missing from "
                             "the trail")
            return


def _first(report: Report) -> int:
    return report.last_seq - report.records + 1
