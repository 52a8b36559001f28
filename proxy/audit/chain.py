"""Tamper evidence for the audit trail: a hash chain with signed checkpoints.

Every record carries `seq` (1, 2, 3, … across rotated files), `prev` (the previous record's
`hash`) and `hash` = SHA-256 of its canonical JSON without `hash` (keys sorted, orjson).
Every N records or T seconds a `checkpoint` record, itself part of the chain, signs its own
`seq` and `prev` — and so the whole chain before it — with an Ed25519 key (RFC 8032) that the
proxy reads from a file. Editing a record breaks its hash; rewriting every later hash too
breaks the next checkpoint's signature, which only the key holder can make.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64  # the `prev` of the very first record
SCHEMA = "orchgate.audit/1"


def canonical(record: Mapping[str, Any], leave_out: tuple[str, ...] = ("hash",)) -> bytes:
    for key in leave_out:
        if key in record:
            record = {k: v for k, v in record.items() if k not in leave_out}
            break
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)


def digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def signed_bytes(checkpoint: Mapping[str, Any]) -> bytes:
    return canonical(checkpoint, ("hash", "signature"))


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Chain:
    """The head of the chain: seals records in order (the caller serializes the calls)."""

    def __init__(self, seq: int = 0, head: str = GENESIS) -> None:
        self.seq = seq
        self.head = head

    def seal(self, record: dict[str, Any], signer: Signer | None = None) -> bytes:
        """Number, link (and sign) the record; return its line, newline included."""
        record["seq"] = self.seq + 1
        record["prev"] = self.head
        if signer is not None:
            record["key_id"] = signer.key_id
            record["signature"] = signer.sign(signed_bytes(record))
        # The line is the canonical form itself with the hash appended: one serialization
        # instead of two, and verify recomputes exactly these bytes (keys sorted, no hash).
        # A record built with its keys in sorted order is serialized as it is.
        if getattr(record, "presorted", False) and "hash" not in record:
            body = orjson.dumps(record, default=str)
        else:
            body = canonical(record)
        hashed = hashlib.sha256(body).hexdigest()
        record["hash"] = hashed
        self.seq, self.head = record["seq"], hashed
        return body[:-1] + b',"hash":"' + hashed.encode() + b'"}\n'



class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return public


def signature_valid(checkpoint: Mapping[str, Any], public: Ed25519PublicKey) -> bool:
    try:
        public.verify(base64.b64decode(str(checkpoint.get("signature", ""))),
                      signed_bytes(checkpoint))
    except (InvalidSignature, ValueError):
        return False
    return checkpoint.get("key_id") == key_id(public)


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 private key (mode 0600) and its public key beside it (`.pub`)."""
    import os

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return public
