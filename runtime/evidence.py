"""Evidence bundles: one episode's audit records, signed so a third party can check them
with the public key alone.

The bundle is a DSSE envelope (``payloadType``, base64 ``payload``, ``signatures``) whose
payload is an in-toto Statement v1: its subject is the episode, with the SHA-256 of its
records' hashes in order as the digest; its predicate holds the records themselves (each
its canonical body, hash and, where its transaction ended, its trail signature) and the
trail's head when exported. The envelope's signature is Ed25519 over DSSE's
pre-authentication encoding of the payload.

What a verifier learns: these records were exported by the holder of the key, unchanged;
each record's hash matches its body and belongs to the episode. What they cannot learn
from the bundle alone: the records of other episodes chained in between (ask for
``tether audit verify`` on the store for that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tether.memory.audit import AuditKey, canonical, digest, key_id, public_pem
from tether.memory.errors import EvidenceError
from tether.memory.store import Store

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://tether.dev/audit-records/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def records_digest(hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def export_bundle(store: Store, episode: str, key: AuditKey, now: datetime) -> dict[str, Any]:
    """The signed evidence of one episode's decisions."""
    found = list(store.audit.records(episode))
    records = [
        {"seq": r.seq, "body": r.body, "hash": r.hash, "sig": r.sig, "key": r.key} for r in found
    ]
    head = store.audit.head()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"tether-episode:{episode}",
                "digest": {"sha256": records_digest([r.hash for r in found])},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "episode": episode,
            "exported_at": now.isoformat(),
            "trail_head": {"seq": head[0], "hash": head[1]},
            "public_key": public_pem(key.public).decode(),
            "records": records,
        },
    }
    payload = canonical(statement)
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.id, "sig": key.sign(pae(PAYLOAD_TYPE, payload))}],
    }


@dataclass(frozen=True)
class BundleCheck:
    episode: str
    records: int
    key: str


def verify_bundle(bundle: Any, public: Ed25519PublicKey) -> BundleCheck:
    """Check a bundle against a trusted public key; ``EvidenceError`` says what is wrong."""
    if not isinstance(bundle, dict):
        raise EvidenceError("the bundle is not a JSON object (a DSSE envelope)")
    if bundle.get("payloadType") != PAYLOAD_TYPE:
        raise EvidenceError(f"payloadType is {bundle.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(str(bundle.get("payload", "")), validate=True)
    except binascii.Error as e:
        raise EvidenceError(f"payload is not base64 ({e})") from e
    ours = key_id(public)
    signatures = bundle.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EvidenceError("the envelope carries no signature")
    mine = [s for s in signatures if isinstance(s, dict) and s.get("keyid") == ours]
    if not mine:
        found = [s.get("keyid") for s in signatures if isinstance(s, dict)]
        raise EvidenceError(f"no signature by the given key {ours} (signed by {found})")
    try:
        public.verify(base64.b64decode(str(mine[0].get("sig", ""))), pae(PAYLOAD_TYPE, payload))
    except (InvalidSignature, binascii.Error, ValueError):
        raise EvidenceError(
            f"the envelope's signature does not match key {ours}: the bundle was altered"
        ) from None
    statement = json.loads(payload)
    predicate = statement.get("predicate", {})
    episode = str(predicate.get("episode"))
    records = predicate.get("records", [])
    for r in records:
        body = r.get("body", "")
        if digest(body.encode()) != r.get("hash"):
            raise EvidenceError(f"record {r.get('seq')}: its body does not match its hash")
        if json.loads(body).get("episode") != episode:
            raise EvidenceError(f"record {r.get('seq')} belongs to another episode")
    subject = statement.get("subject", [{}])[0]
    want = records_digest([r["hash"] for r in records])
    if subject.get("digest", {}).get("sha256") != want:
        raise EvidenceError("the statement's subject digest does not match its records")
    return BundleCheck(episode, len(records), ours)
