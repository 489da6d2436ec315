"""Per-subject keys: personal data is sealed under its data subject's key (crypto-shredding).

Every event class names the fields that may carry personal data (``Event.personal``).
When an event belongs to a data subject (an episode about ``customer:ada``, a fact about
her), the mapper replaces each of those fields by a ``Sealed`` value, which eventsourcing's
transcoding hook turns into ``{"_type_": "sealed", "_data_": {subject, nonce, ciphertext,
kind}}``: AES-256-GCM under the subject's key, with the field's name as associated data.
The plaintext never reaches the database.

Erasing the subject destroys the key. The events stay (the log is append-only, and every
other field still tells the story), and a sealed field then decodes to a marker of the
same kind: ``"[erased]"``, ``{"erased": "customer:ada"}`` or ``["[erased]"]``.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Transcoder, Transcoding
from sqlalchemy.engine import Engine

from .recorder import writing

ERASED = "[erased]"
"""What a sealed text field reads as once its subject was erased."""


@dataclass(frozen=True)
class Sealed:
    """A value to be written encrypted under a subject's key."""

    subject: str
    field: str
    value: Any


def erased(kind: str, subject: str) -> Any:
    """The marker that stands in for an erased value of a JSON ``kind``."""
    if kind == "dict":
        return {"erased": subject}
    if kind == "list":
        return [ERASED]
    return ERASED


class SubjectKeys:
    """The key table: one AES-256 key per data subject, cached per process."""

    def __init__(self, engine: Engine, table_name: str = "tether_subject_keys") -> None:
        self.engine = engine
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            table_name,
            self.metadata,
            sa.Column("subject", sa.String(200), primary_key=True),
            sa.Column("key", sa.LargeBinary, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def create_table(self) -> None:
        self.metadata.create_all(self.engine)

    def get(self, subject: str) -> bytes | None:
        """The subject's key, or None if it has none (never had one, or was erased)."""
        with self._lock:
            if subject in self._cache:
                return self._cache[subject]
        t = self.table
        with self.engine.connect() as conn:
            key = conn.execute(sa.select(t.c.key).where(t.c.subject == subject)).scalar()
        if key is not None:
            with self._lock:
                self._cache[subject] = bytes(key)
            return bytes(key)
        return None

    def key_for(self, subject: str, now: datetime) -> bytes:
        """The subject's key, made on first use."""
        found = self.get(subject)
        if found is not None:
            return found
        fresh = AESGCM.generate_key(bit_length=256)
        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(t).values(subject=subject, key=fresh, created_at=now))
        except sa.exc.IntegrityError:
            pass  # another process made it first: use theirs
        key = self.get(subject)
        assert key is not None
        return key

    def destroy(self, subject: str) -> bool:
        """Delete the subject's key; True if there was one."""
        with self._lock:
            self._cache.pop(subject, None)
        t = self.table
        with writing(self.engine) as conn:
            gone = conn.execute(sa.delete(t).where(t.c.subject == subject)).rowcount
        return bool(gone)


def _kind(value: Any) -> str:
    return "dict" if isinstance(value, dict) else "list" if isinstance(value, list) else "str"


class SealedTranscoding(Transcoding):
    """eventsourcing's transcoding hook for sealed fields."""

    type = Sealed
    name = "sealed"

    def __init__(self, keys: SubjectKeys, transcoder: Transcoder, clock: Any) -> None:
        self.keys = keys
        self.transcoder = transcoder
        self.clock = clock
        self._ciphers: dict[bytes, AESGCM] = {}

    def _cipher(self, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def encode(self, obj: Sealed) -> dict[str, str]:
        key = self.keys.get(obj.subject) or self.keys.key_for(obj.subject, self.clock.now())
        nonce = os.urandom(12)
        plain = self.transcoder.encode(obj.value)
        sealed = self._cipher(key).encrypt(nonce, plain, obj.field.encode())
        return {
            "s": obj.subject,
            "f": obj.field,
            "k": _kind(obj.value),
            "n": base64.b64encode(nonce).decode(),
            "c": base64.b64encode(sealed).decode(),
        }

    def decode(self, data: dict[str, str]) -> Any:
        key = self.keys.get(data["s"])
        if key is None:
            return erased(data["k"], data["s"])
        plain = self._cipher(key).decrypt(
            base64.b64decode(data["n"]), base64.b64decode(data["c"]), data["f"].encode()
        )
        return self.transcoder.decode(plain)
