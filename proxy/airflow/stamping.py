"""Run stamping: a DAG run triggered through orchgate says who started it, in its `note`.

Airflow records the caller as `triggering_user_name` only when orchgate signs a token for
that caller; with a shared service account (credential mode `password`) it records the
service account. The note, shown in Airflow's UI beside the run, always names the caller and
the request id that finds the audit record. A caller's own note is kept: the stamp is appended
below it, and left out when both would not fit Airflow's 1,000 characters
(airflow/models/dagrun.py DagRunNote.content is String(1000)).
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import bad_request

NOTE_LIMIT = 1000


def stamp(body: Any, caller: str, request_id: str, parent: str | None = None) -> bytes:
    """The trigger body with the stamp in its `note` (and the parent run, lineage.py)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    line = f"Triggered through orchgate by {caller} (request {request_id})"
    if parent is not None:
        line += f"\nParent run: {parent}"
    note = body.get("note")
    if isinstance(note, str) and note.strip():
        combined = f"{note}\n\n{line}"
        stamped = combined if len(combined) <= NOTE_LIMIT else note
    else:
        stamped = line
    return orjson.dumps({**body, "note": stamped})
