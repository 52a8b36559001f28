"""Where audit records go: an append-only JSON-lines file and, optionally, stdout.

A record is a structlog event; `redact` runs on every one before it is rendered.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import structlog

from proxy.audit.logging import LineWriter, dumps, redact
from proxy.settings import AuditSettings


class AuditLog:
    def __init__(self, settings: AuditSettings) -> None:
        self._file: IO[str] | None = None
        streams: list[IO[str]] = []
        if settings.file is not None:
            self._file = open(settings.file, "a", encoding="utf-8")  # noqa: SIM115 see close()
            streams.append(self._file)
        if settings.stdout:
            streams.append(sys.stdout)
        self._logger = structlog.wrap_logger(
            LineWriter(streams),
            processors=[redact, structlog.processors.JSONRenderer(serializer=dumps)],
        )

    def write(self, record: dict[str, Any]) -> None:
        fields = dict(record)
        self._logger.msg(fields.pop("event"), **fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
