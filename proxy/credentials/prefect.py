"""The Prefect server's shared credential (`PREFECT_SERVER_API_AUTH_STRING`), from a file.

The open-source server knows one Basic credential and no users (DESIGN.md §5), so the caller
never sees it and orchgate is the security boundary. The file is re-read when its modification
time or size changes, so rotating it needs no restart.
"""

from __future__ import annotations

import base64
import os

from proxy.settings import SecretRef


class PrefectAuth:
    def __init__(self, secret: SecretRef) -> None:
        self._secret = secret
        self._stamp: tuple[int, int] | None = None
        self._value = ""
        self._header = b""
        self._refresh()
        if not self._value:
            self._load()

    def _load(self) -> None:
        value = self._secret.read()
        if not value:  # a file caught mid-rewrite: keep the credential we have
            return
        self._value = value
        token = base64.b64encode(value.encode()).decode()
        self._header = f"Basic {token}".encode()

    def _refresh(self) -> None:
        if self._secret.file is None:
            return
        st = os.stat(self._secret.file)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._load()
            self._stamp = stamp

    def header(self) -> bytes:
        """The `Authorization` value for HTTP requests."""
        self._refresh()
        return self._header

    def auth_string(self) -> str:
        """The token for the websocket `auth` message."""
        self._refresh()
        return self._value
