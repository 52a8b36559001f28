"""structlog configuration shared by the audit trail and the operational log.

Both go through `redact`, which cannot be bypassed by a caller: it runs on every event dict,
removes values of credential-bearing keys, and masks anything shaped like a JWT or a Basic
credential wherever it appears in a string (a token pasted into a query string included).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import orjson
import structlog

SECRET_KEYS = re.compile(r"(authorization|cookie|token|secret|password|api[_-]?key|"
                         r"auth[_-]?string|credential)", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BASIC = re.compile(r"(?i)(basic|bearer)\s+[A-Za-z0-9+/=._~-]{8,}")
# Either pattern needs one of these: one search spares most strings the two substitutions
# (redaction was 85 % of the cost of an audit record).
_MAYBE = re.compile(r"eyJ|(?i:basic|bearer)")
_SHORTEST = 13  # no JWT (eyJ + 4 . 4 .) or Basic/Bearer credential (6 + 1 + 8) is shorter
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) < _SHORTEST or _MAYBE.search(value) is None:
            return value
        return _BASIC.sub(r"\1 " + REDACTED, _JWT.sub(REDACTED, value))
    if isinstance(value, dict):
        return {k: REDACTED if secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def secret_key(key: object) -> bool:
    """Whether a mapping key names a credential (its value is never recorded)."""
    return isinstance(key, str) and _secret_name(key)


@functools.lru_cache(maxsize=4096)  # records and log events use a small set of key names
def _secret_name(key: str) -> bool:
    return bool(SECRET_KEYS.search(key))


# A cheap first look before the walk: anything a JWT (`eyJ`) or a Basic/Bearer credential
# could start with, anywhere in the serialized event, or a credential-bearing key name in any
# mapping of it. Most records have none, and skip walking every value (that walk was most of
# an audit record's cost); any hit takes the walk.


def _has_secret_key(value: Any) -> bool:
    if isinstance(value, dict):
        if not _SAFE_NAMES.issuperset(value):  # in C: most names are known
            for key in value:
                if not isinstance(key, str) or _secret_name(key):
                    return True
                if len(_SAFE_NAMES) < 4096:
                    _SAFE_NAMES.add(key)
        return any(_has_secret_key(v) for v in value.values() if type(v) in _CONTAINERS)
    if isinstance(value, list | tuple):
        return any(_has_secret_key(v) for v in value if type(v) in _CONTAINERS)
    return False


_SAFE_NAMES: set[str] = set()  # key names seen and found not to name a credential
_CONTAINERS = (dict, list, tuple)


def plainly_clean(serialized: bytes, event: Any) -> bool:
    """True when an event cannot hold a credential: its serialization (JSON, keys and values)
    has nothing a JWT or a Basic/Bearer credential starts with, and no mapping in `event` has
    a credential-bearing key (`event` None: its key names were vetted where it was built).
    False means it might, and the event takes `scrub`. The audit trail checks each sealed
    line with it instead of walking every record."""
    # Each search is a pass over the line; a one-byte search is memchr, many times faster. A
    # JWT needs "eyJ", so a "J". A Basic/Bearer credential is the word, whitespace, then the
    # credential (`_BASIC`): in JSON, whitespace is a space, an escape (backslash) or a
    # non-ASCII byte. Most records have none of these and take no multi-byte search at all.
    if b"J" in serialized and b"eyJ" in serialized:
        return False
    if b" " in serialized or b"\\" in serialized or not serialized.isascii():
        lowered = serialized.lower()
        if b"basic" in lowered or b"bearer" in lowered:
            return False
    return event is None or not _has_secret_key(event)


def scrub(event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Walk the event: values of credential-bearing keys removed, credentials masked."""
    for key in list(event):
        event[key] = REDACTED if secret_key(key) else _scrub(event[key])
    return event


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    try:
        text = orjson.dumps(event, default=str)
    except TypeError:  # keys orjson cannot serialize: take the walk
        return scrub(event)
    return event if plainly_clean(text, event) else scrub(event)


def dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


class LineWriter:
    """A structlog logger that writes each rendered line to several streams and flushes."""

    def __init__(self, streams: list[IO[str]]) -> None:
        self.streams = streams

    def msg(self, message: str) -> None:
        for stream in self.streams:
            stream.write(message + "\n")
            stream.flush()

    info = warning = error = debug = critical = msg


def json_logger(streams: list[IO[str]], name: str) -> Any:
    return structlog.wrap_logger(
        LineWriter(streams),
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    redact,
                    structlog.processors.JSONRenderer(serializer=dumps)],
        logger_name=name,
        cache_logger_on_first_use=True,
    )


def operational_log() -> Any:
    """The operational log: JSON lines on stderr."""
    return json_logger([sys.stderr], "orchgate")
