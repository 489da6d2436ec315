"""The audit trail: a signed, hash-chained record of every decision, beside the event log.

Each record is canonical JSON (sorted keys, no spaces, UTF-8; only strings, integers,
lists and null, so RFC 8785 and this agree) holding its place (``seq``), the previous
record's hash (``prev``) and the decision: episode, agent, action, stage, verdict, rule
ids, policy version hash, a salted hash of the arguments, approver. Never an argument's
value nor a free-text reason, which may name a person: erasing a data subject leaves the
trail whole and verifiable.

Records are written in the transaction that writes their events, so the two never
disagree; within it the chain continues from the table's last record. The last record of
each transaction is signed with Ed25519, and its signature covers every record before it
through the chain: a commit costs one signature (~40 µs), not one per record.

``verify`` walks the trail in order and names the first record that breaks it: missing
(deleted), out of place (reordered or inserted), altered (its hash), unchained, or not
covered by a signature (appended by someone without the key). Someone without the key who
alters a record and recomputes every later hash is caught at the next signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Engine

from tether.memory.errors import AuditKeyError, AuditTampered

GENESIS = "0" * 64
"""The ``prev`` of the first record."""

DEFAULT_KEY = ".tether/audit.key"
"""Where the signing key lives when neither ``--audit-key`` nor ``TETHER_AUDIT_KEY`` says.
Keep it apart from the database in production: whoever holds both can rewrite history."""


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of a record (or of a tool's arguments): keys sorted, no
    whitespace, UTF-8; a value JSON has no type for (a date, a decimal) as its ``str``."""
    try:
        return orjson.dumps(
            value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
        )
    except orjson.JSONEncodeError:  # an integer past 64 bits, from a tool's arguments
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode()


def episode_act(
    episode: str, stage: str, decision: str, approver: str, at: str, event: str
) -> dict[str, Any]:
    """The audit record of a person's or a runner's act on a whole episode (a take-over
    of its lease, a cancel): no agent, no rule, the event that records it."""
    return {
        "kind": stage,
        "at": at,
        "episode": episode,
        "agent": None,
        "stage": stage,
        "decision": decision,
        "rules": [],
        "approver": approver,
        "event": event,
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_key_path(path: str | os.PathLike[str] | None) -> Path:
    """The signing key's path: ``path``, else ``$TETHER_AUDIT_KEY``, else the default;
    made absolute once, so every process of a fleet uses the same file."""
    chosen = Path(path or os.environ.get("TETHER_AUDIT_KEY") or DEFAULT_KEY).expanduser()
    return chosen if chosen.is_absolute() else Path.cwd() / chosen


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the start of its raw bytes' SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return digest(raw)[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, source: str) -> Ed25519PublicKey:
    """A public key from PEM (or from a private key's PEM, whose public half it takes)."""
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
            if isinstance(public, Ed25519PublicKey):
                return public
    except ValueError as e:
        raise AuditKeyError(source, f"not a PEM key ({e})") from e
    raise AuditKeyError(source, "not an Ed25519 key")


class AuditKey:
    """The Ed25519 key that signs the trail, kept in a file (PKCS#8 PEM, mode 0600).

    Created on first use if the file does not exist; read-only commands never create one.
    """

    def __init__(self, path: Path, private: Ed25519PrivateKey) -> None:
        self.path = path
        self._private = private
        self.public = private.public_key()
        self.id = key_id(self.public)
        # The arguments' hashes are keyed with a value derived from the signing key: only
        # its holder can test whether a record's arguments were some given values.
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._salt = hashlib.sha256(b"tether audit arguments\x00" + raw).digest()

    @classmethod
    def load(cls, path: Path, *, create: bool = False) -> AuditKey:
        if not path.exists():
            if not create:
                raise AuditKeyError(str(path), "no such file (set --audit-key or TETHER_AUDIT_KEY)")
            return cls._create(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise AuditKeyError(str(path), e.strerror or str(e)) from e
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise AuditKeyError(str(path), f"not an unencrypted PEM private key ({e})") from e
        if not isinstance(private, Ed25519PrivateKey):
            raise AuditKeyError(str(path), "not an Ed25519 private key")
        return cls(path, private)

    @classmethod
    def _create(cls, path: Path) -> AuditKey:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(path)  # another process made it a moment ago
        except OSError as e:
            raise AuditKeyError(str(path), e.strerror or str(e)) from e
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return cls(path, private)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._private.sign(data)).decode()

    def arguments_hash(self, arguments: Any) -> str:
        """The salted hash of a call's arguments that the trail holds instead of them."""
        return hmac.new(self._salt, canonical(arguments), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """One row of the trail."""

    seq: int
    body: str
    """The canonical JSON that ``hash`` is the SHA-256 of."""
    hash: str
    sig: str | None
    key: str | None

    @property
    def fields(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found."""

    records: int
    signatures: int
    bad: int | None = None
    """The first record that breaks the trail, if any."""
    problem: str = ""
    decisions: int | None = None
    """The decision events checked against the records (None: the events were not read;
    ``memory/coverage.py``)."""
    gap: str = ""
    """The first disagreement between the trail and the events, if any."""
    foreign_key: str | None = None
    """The key that signed record ``bad``, when none of the keys given is it: the wrong
    key, not a sign of tampering."""

    @property
    def intact(self) -> bool:
        return self.bad is None and not self.gap


class AuditTrail:
    """The ``tether_audit`` table: written inside the recorder's transactions."""

    def __init__(self, engine: Engine, table_name: str = "tether_audit") -> None:
        self.engine = engine
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            table_name,
            self.metadata,
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("episode", sa.String(36), nullable=True, index=True),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("sig", sa.Text, nullable=True),
            sa.Column("key", sa.String(32), nullable=True),
        )
        self._head = f"SELECT seq, hash, sig, key FROM {table_name} ORDER BY seq DESC LIMIT 1"
        self._trusted = GENESIS
        """The hash of the last record this process wrote or found signed."""
        self._insert = (
            f"INSERT INTO {table_name} (seq, episode, body, hash, sig, key) "
            "VALUES ({m}, {m}, {m}, {m}, {m}, {m})"
        )

    def create_table(self) -> None:
        self.metadata.create_all(self.engine)

    def write(
        self, cursor: Any, mark: str, bodies: Sequence[dict[str, Any]], key: AuditKey
    ) -> None:
        """Append records for ``bodies`` through a DB-API cursor of the open transaction
        (whose placeholder is ``mark``), chained to the last record; sign the last."""
        cursor.execute(self._head)
        head = cursor.fetchone()
        seq, prev = (int(head[0]), str(head[1])) if head else (0, GENESIS)
        if head is not None and prev != self._trusted:
            self._check_head(seq, prev, head[2], head[3], key)
        rows = []
        for body in bodies:
            seq += 1
            body["seq"], body["prev"] = seq, prev  # the bodies are the caller's to give away
            data = canonical(body)
            prev = hashlib.sha256(data).hexdigest()
            rows.append([seq, body.get("episode"), data.decode(), prev, None, None])
        rows[-1][4] = key.sign(bytes.fromhex(prev))
        rows[-1][5] = key.id
        cursor.executemany(self._insert.format(m=mark), rows)
        self._trusted = prev  # if this transaction rolls back, the next write checks again

    def _check_head(
        self, seq: int, hash_: str, sig: str | None, key_id: str | None, key: AuditKey
    ) -> None:
        """Refuse to chain onto a last record that no key holder signed.

        Every transaction ends with a signed record; one someone appended without the key
        is unsigned (or its signature fails), and chaining onto it would let the next
        signature cover it. Checked when the last record is not the one this process
        wrote or checked last, so a single writer pays nothing."""
        if sig is None:
            raise AuditTampered(seq, "it is signed by no one: it was appended without the key")
        if key_id == key.id:
            try:
                key.public.verify(base64.b64decode(sig), bytes.fromhex(hash_))
            except (InvalidSignature, ValueError):
                raise AuditTampered(seq, "its signature does not match") from None
        # Signed by another key (a rotated one): `tether audit verify` checks it with the
        # keys it is given.
        self._trusted = hash_

    def head(self) -> tuple[int, str]:
        """The last record's place and hash (0 and the genesis hash for an empty trail)."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.seq, t.c.hash).order_by(t.c.seq.desc())).first()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def records(self, episode: str | None = None) -> Iterator[AuditRecord]:
        """The trail (or one episode's records) in order, read in pages."""
        t = self.table
        after = 0
        while True:
            q = sa.select(t.c.seq, t.c.body, t.c.hash, t.c.sig, t.c.key).where(t.c.seq > after)
            if episode is not None:
                q = q.where(t.c.episode == episode)
            with self.engine.connect() as conn:
                page = conn.execute(q.order_by(t.c.seq).limit(5_000)).all()
            if not page:
                return
            for r in page:
                yield AuditRecord(int(r[0]), r[1], r[2], r[3], r[4])
            after = int(page[-1][0])

    def verify(self, keys: dict[str, Ed25519PublicKey]) -> Verdict:
        """Check the whole trail against the public ``keys`` (by key id): the chain and
        signatures alone. ``coverage.verify_trail`` also checks it against the events."""
        return check_chain(self.records(), keys)


def check_chain(records: Iterable[AuditRecord], keys: dict[str, Ed25519PublicKey]) -> Verdict:
    """Verify a contiguous trail from its first record."""
    expected, prev, signatures, unsigned_from = 1, GENESIS, 0, None
    for r in records:
        bad = _check(r, expected, prev)
        if bad:
            return Verdict(expected - 1, signatures, r.seq if r.seq == expected else expected, bad)
        if r.sig is not None:
            public = keys.get(r.key or "")
            if public is None:
                given = ", ".join(keys) or "none"
                problem = f"it is signed by key {r.key}, not the key given ({given})"
                return Verdict(expected - 1, signatures, r.seq, problem, foreign_key=r.key)
            try:
                public.verify(base64.b64decode(r.sig), bytes.fromhex(r.hash))
            except (InvalidSignature, ValueError):
                problem = "its signature does not match: it, or a record before it, was altered"
                return Verdict(expected - 1, signatures, r.seq, problem)
        if r.sig is not None:
            signatures += 1
            unsigned_from = None
        elif unsigned_from is None:
            unsigned_from = r.seq
        prev, expected = r.hash, expected + 1
    if unsigned_from is not None:
        return Verdict(
            expected - 1,
            signatures,
            unsigned_from,
            f"records {unsigned_from}..{expected - 1} are covered by no signature: "
            "written without the signing key",
        )
    return Verdict(expected - 1, signatures)


def _check(r: AuditRecord, expected: int, prev: str) -> str:
    """What is wrong with a record's place, body, hash or link (its signature aside)."""
    if r.seq > expected:
        return f"record {expected} is missing (the trail jumps from {expected - 1} to {r.seq})"
    try:
        body = json.loads(r.body)
    except ValueError:
        return "its body is not JSON"
    if not isinstance(body, dict) or body.get("seq") != r.seq:
        found = body.get("seq") if isinstance(body, dict) else None
        return f"it holds record {found}'s body: records were reordered or inserted"
    if canonical(body).decode() != r.body:
        return "its body was rewritten"
    if digest(r.body.encode()) != r.hash:
        return "its body does not match its hash: it was modified"
    if body.get("prev") != prev:
        return f"it does not follow record {expected - 1}: a record was inserted or removed"
    return ""
