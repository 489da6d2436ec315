"""The audit trail: every decision signed and chained, tampering named, evidence that a
third party checks with the public key alone."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store
from tether.memory.audit import GENESIS, AuditKey, canonical, digest, public_pem
from tether.memory.episodes import episode_events
from tether.memory.events import StageEvent, agent_stream_id
from tether.runtime.cli import app
from tether.runtime.errors import AuditTampered
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import LocalHost, RootSupervisor
from tether.topologies import demo


def refund_desk(store: Store, first_id: int = 1) -> uuid.UUID:
    """The demo about customer:ada: a refund a person approves, then finished."""
    clock, ids = StepClock(), SequentialIds(first_id)

    def supervisor() -> RootSupervisor:
        host = Host(demo.topology, store, clock, ids)
        return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)

    episode = supervisor().start(demo.task, demo.context, subject=demo.subject).episode_id
    [item] = Inbox(store, clock).items("pending")
    Inbox(store, clock).approve(item.id, "alice", "order checked")
    assert supervisor().resume(episode).status == "completed"
    return episode


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def cli_stdout(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_every_decision_is_audited_and_the_trail_verifies(store_url: str) -> None:
    with Store(store_url) as store:
        episode = refund_desk(store)
        records = list(store.audit.records())
        decisions = [
            e
            for _, e in episode_events(store, episode)
            if isinstance(e, StageEvent)
            and e.stage != "record"
            and type(e).__name__ not in ("ApprovalAwaited", "BudgetSettled", "ExecutionStarted")
        ]
        bodies = [r.fields for r in records]
        # One record per decision the gate recorded, and one for the person's approval.
        assert len([b for b in bodies if b["kind"] == "decision"]) == len(decisions)
        [approval] = [b for b in bodies if b["kind"] == "approval"]
        assert (approval["approver"], approval["decision"]) == ("alice", "granted")
        assert {b["stage"] for b in bodies} == {
            "boundaries",
            "budget",
            "governance",
            "approval",
            "execution",
            "verification",
        }
        denied = [b for b in bodies if b["decision"] == "deny"]
        assert denied and all(b["rules"] for b in denied)  # a denial names its rules
        assert {b["policy"] for b in bodies if b["kind"] == "decision"} == {
            demo.topology.policy_hash()
        }
        # Hashes of the arguments, never the arguments: nothing of ada's in the trail.
        assert all(len(b["arguments"]) == 64 for b in bodies)
        assert not any("ada@example.com" in r.body for r in records)
        # Chained from the genesis hash, in order, each transaction's last record signed.
        assert bodies[0]["prev"] == GENESIS
        assert [b["seq"] for b in bodies] == list(range(1, len(bodies) + 1))
        assert records[-1].sig is not None
        assert 1 < sum(r.sig is not None for r in records) < len(records)
        key = AuditKey.load(store.audit_key_path)
        verdict = store.audit.verify({key.id: key.public})
    assert verdict.intact and verdict.records == len(records)
    assert cli("audit", "verify", "--db", store_url) == (
        0,
        f"audit trail intact: {len(records)} records, {verdict.signatures} signatures, "
        f"key {key.id}\n",
    )


@pytest.fixture
def trail(sqlite_url: str) -> Store:
    with Store(sqlite_url) as store:
        refund_desk(store)
    return Store(sqlite_url)


def _rows(store: Store) -> list[tuple[int, str, str]]:
    t = store.audit.table
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t.c.seq, t.c.body, t.c.hash))]  # type: ignore[misc]


def _broken(store: Store) -> str:
    code, output = cli("audit", "verify", "--db", store.url)
    assert code == 1, output
    return " ".join(output.split())


def test_a_modified_record_is_named(trail: Store) -> None:
    t = trail.audit.table
    body = json.loads(_rows(trail)[4][1])
    body["decision"] = "allow" if body["decision"] != "allow" else "deny"
    with trail.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 5).values(body=canonical(body).decode()))
    assert "broken at record 5: its body does not match its hash" in _broken(trail)


def test_a_deleted_record_is_named(trail: Store) -> None:
    t = trail.audit.table
    with trail.engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 7))
    assert "broken at record 7: record 7 is missing" in _broken(trail)


def test_an_inserted_record_is_named(trail: Store) -> None:
    # A forger shifts records 4.. up by one and slips a chained record in at 4.
    t = trail.audit.table
    rows = _rows(trail)
    with trail.engine.begin() as conn:
        for seq, *_ in reversed(rows[3:]):
            conn.execute(sa.update(t).where(t.c.seq == seq).values(seq=seq + 1))
        forged = {**json.loads(rows[3][1]), "decision": "allow", "seq": 4, "prev": rows[2][2]}
        text = canonical(forged).decode()
        conn.execute(sa.insert(t).values(seq=4, body=text, hash=digest(text.encode())))
    assert "broken at record 5: it holds record 4's body" in _broken(trail)


def test_reordered_records_are_named(trail: Store) -> None:
    t = trail.audit.table
    rows = _rows(trail)
    with trail.engine.begin() as conn:
        for seq, body, hash_ in ((9, rows[9][1], rows[9][2]), (10, rows[8][1], rows[8][2])):
            conn.execute(sa.update(t).where(t.c.seq == seq).values(body=body, hash=hash_))
    assert "broken at record 9: it holds record 10's body" in _broken(trail)


def test_a_record_appended_without_the_key_is_named(trail: Store) -> None:
    t = trail.audit.table
    seq, body, hash_ = _rows(trail)[-1]
    forged = {**json.loads(body), "seq": seq + 1, "prev": hash_, "decision": "allow"}
    text = canonical(forged).decode()
    with trail.engine.begin() as conn:
        conn.execute(sa.insert(t).values(seq=seq + 1, body=text, hash=digest(text.encode())))
    assert (
        f"broken at record {seq + 1}: records {seq + 1}..{seq + 1} are covered by no signature"
        in (_broken(trail))
    )
    # And tether will not chain onto it, which would let its next signature cover it: the
    # first decision of the next episode is refused, and nothing of it is written.
    with pytest.raises(AuditTampered, match=f"record {seq + 1}: it is signed by no one"):
        refund_desk(trail, first_id=100)
    assert _rows(trail)[-1][0] == seq + 1
    stages = [
        e
        for e in trail.read(agent_stream_id(uuid.UUID(int=100), "triage"))
        if isinstance(e, StageEvent)
    ]
    assert stages == []


def test_rewriting_history_without_the_key_is_caught_at_the_next_signature(trail: Store) -> None:
    # A forger who alters record 2 and recomputes every later hash and link: the chain is
    # consistent again, but the first signature after record 2 no longer matches.
    t = trail.audit.table
    rows = _rows(trail)
    prev = rows[0][2]
    with trail.engine.begin() as conn:
        for seq, body, _ in rows[1:]:
            fields = json.loads(body)
            fields["prev"] = prev
            if seq == 2:
                fields["decision"] = "tampered"
            text = canonical(fields).decode()
            prev = digest(text.encode())
            conn.execute(sa.update(t).where(t.c.seq == seq).values(body=text, hash=prev))
    signed = [r.seq for r in trail.audit.records() if r.sig is not None]
    first = next(s for s in signed if s >= 2)
    assert f"broken at record {first}: its signature does not match" in _broken(trail)


def test_verifying_with_another_key_names_the_key(trail: Store, tmp_path: Path) -> None:
    other = AuditKey.load(tmp_path / "other.key", create=True)
    (tmp_path / "other.pem").write_bytes(public_pem(other.public))
    code, output = cli("audit", "verify", "--db", trail.url, "--key", str(tmp_path / "other.pem"))
    assert code == 1 and "which is not among the keys given" in output


def test_evidence_bundle_verifies_with_the_public_key_alone(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(sqlite_url) as store:
        episode = refund_desk(store)
        mine = sum(1 for r in store.audit.records(str(episode)))
    code, pem = cli_stdout("audit", "key")
    assert code == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "pub.pem").write_text(pem)
    code, bundle = cli_stdout("audit", "export", str(episode), "--db", sqlite_url)
    assert code == 0, bundle
    envelope = json.loads(bundle)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["name"] == f"tether-episode:{episode}"
    assert len(statement["predicate"]["records"]) == mine
    (tmp_path / "evidence.json").write_text(bundle)
    # The third party needs no store and no signing key: only the bundle and pub.pem.
    monkeypatch.setenv("TETHER_AUDIT_KEY", str(tmp_path / "absent.key"))
    code, output = cli(
        "audit",
        "verify-bundle",
        str(tmp_path / "evidence.json"),
        "--key",
        str(tmp_path / "pub.pem"),
    )
    assert code == 0, output
    assert f"evidence intact: episode {episode}, {mine} records" in output
    # One changed byte of the statement (a decision flipped) and it no longer verifies.
    tampered = base64.b64encode(
        base64.b64decode(envelope["payload"]).replace(
            b'\\"decision\\":\\"deny\\"', b'\\"decision\\":\\"allow\\"', 1
        )
    ).decode()
    assert tampered != envelope["payload"]
    (tmp_path / "tampered.json").write_text(json.dumps({**envelope, "payload": tampered}))
    code, output = cli(
        "audit",
        "verify-bundle",
        str(tmp_path / "tampered.json"),
        "--key",
        str(tmp_path / "pub.pem"),
    )
    assert code == 1 and "does not match key" in output


def test_the_signing_key_is_private_and_a_bad_one_is_one_clear_line(
    sqlite_url: str, audit_key: Path
) -> None:
    with Store(sqlite_url) as store:
        refund_desk(store)
    assert audit_key.stat().st_mode & 0o777 == 0o600
    audit_key.write_text("not a key")
    code, output = cli("audit", "verify", "--db", sqlite_url)
    assert code == 1
    assert output.startswith(f"error: audit key {audit_key}: not an unencrypted PEM private key")
    assert len(output.strip().splitlines()) == 1


def test_two_writers_chain_onto_each_others_signed_records(store_url: str) -> None:
    # Each store instance checks the signature of a last record it did not write itself.
    with Store(store_url) as first, Store(store_url) as second:
        refund_desk(first)
        refund_desk(second, first_id=100)
        refund_desk(first, first_id=200)
        key = AuditKey.load(first.audit_key_path)
        verdict = second.audit.verify({key.id: key.public})
    assert verdict.intact and verdict.records > 30
