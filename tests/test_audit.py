"""The audit trail: every decision signed and chained, tampering named, evidence that a
third party checks with the public key alone."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from tether.memory import (
    SequentialIds,
    StepClock,
    Store,
    erase_subject,
    fork_episode,
    redact_field,
    retain_episodes,
)
from tether.memory.audit import GENESIS, AuditKey, AuditRecord, canonical, digest, public_pem
from tether.memory.episodes import episode_events
from tether.memory.errors import AuditTampered
from tether.memory.events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalTimedOut,
    EpisodeCancelled,
    EpisodeForked,
    EpisodeTakenOver,
    EscalationDecided,
    GovernanceDecided,
    StageEvent,
    agent_stream_id,
)
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
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
        f"key {key.id}; {len(records)} decision events, each accounted for\n",
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
    said = " ".join(output.split())
    assert code == 1 and f"not the key given ({other.id}, {tmp_path / 'other.pem'})" in said


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


# --- the trail against the events -------------------------------------------------------


def _supervisor(store: Store, first_id: int) -> RootSupervisor:
    clock, ids = StepClock(), SequentialIds(first_id)
    host = Host(demo.topology, store, clock, ids)
    return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)


def _keys(store: Store) -> dict[str, Ed25519PublicKey]:
    key = AuditKey.load(store.audit_key_path)
    return {key.id: key.public}


def test_an_emptied_trail_is_named(store_url: str) -> None:
    # Someone empties tether_audit. No chain is left to break, but every decision the
    # trail recorded still stands in the event log.
    with Store(store_url) as store:
        refund_desk(store)
        decided = sum(1 for _ in store.audit.records())  # one record per decision event
        with store.engine.begin() as conn:
            conn.execute(sa.delete(store.audit.table))
    assert f"empty trail: 0 records while {decided} decision events stand" in _broken(store)


def test_a_trail_cut_back_to_a_signed_record_is_named(store_url: str) -> None:
    # Someone deletes the last transactions' records, back to a signed record: every
    # record and signature left verifies, so only the events show what is gone.
    with Store(store_url) as store:
        refund_desk(store)
        records = list(store.audit.records())
        kept = [r.seq for r in records if r.sig is not None][-3]
        t = store.audit.table
        with store.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.seq > kept))
        assert store.audit.verify(_keys(store)).intact  # the chain alone cannot tell
    broken = _broken(store)
    assert f"cut short: the trail ends at record {kept}" in broken
    assert f"{len(records) - kept} decision events after it have no record" in broken


def test_a_decision_written_without_its_record_is_named(store_url: str) -> None:
    with Store(store_url) as store:
        episode = refund_desk(store)
        # Someone slips a governance decision into triage's stream, behind the trail's back...
        stream = agent_stream_id(episode, "triage")
        last = store.read(stream)[-1]
        position = last.originator_version + 1
        forged = GovernanceDecided(
            originator_id=stream,
            originator_version=position,
            at=last.at,
            action=1,
            decision="allow",
            reason="",
            tier="low",
            rules=[],
        )
        store.append([forged])
        # ...and the fleet goes on: the next episode's decisions are recorded as usual.
        refund_desk(store, first_id=100)
    assert (
        f"missing: no audit record for decision event {stream}/{position} "
        f"(GovernanceDecided of episode {episode}, agent triage, action 1)"
    ) in _broken(store)


def test_a_record_whose_event_is_gone_is_named(store_url: str) -> None:
    with Store(store_url) as store:
        refund_desk(store)
        # Someone deletes the event that record 5 audits; the trail itself is untouched.
        fifth = next(r for r in store.audit.records() if r.seq == 5).fields
        stream, position = fifth["event"].rsplit("/", 1)
        t = store.recorder.table
        with store.engine.begin() as conn:
            conn.execute(
                sa.delete(t).where(
                    t.c.originator_id == stream, t.c.originator_version == int(position)
                )
            )
    assert (
        f"orphan: record 5 audits event {fifth['event']} ({fifth['stage']} of episode "
        f"{fifth['episode']}, agent {fifth['agent']}, action {fifth['action']}), "
        "which the store does not hold"
    ) in _broken(store)


def test_forks_redaction_erasure_and_retention_leave_the_trail_intact(store_url: str) -> None:
    with Store(store_url) as store:
        episode = refund_desk(store)
        # A fork copies the first two steps' decisions (the original's records cover them)
        # and goes on deciding live, up to the refund that waits for a person again.
        forked = fork_episode(store, episode, 2, uuid.UUID(int=500), StepClock().now())
        assert _supervisor(store, 600).resume(forked).status == "waiting"
        # A field is redacted, ada is erased, and retention forgets the finished episode.
        triage = store.read(agent_stream_id(episode, "triage"))
        decided = next(e for e in triage if isinstance(e, GovernanceDecided))
        where = decided.originator_version
        redact_field(
            store, episode, "triage", where, "reason", reason="", by="dpo", clock=StepClock()
        )
        erase_subject(store, demo.subject, requested_by="dpo", reason="asked", clock=StepClock())
        [forgotten] = retain_episodes(store, ttl=None, keep=0, now=StepClock().now())
        assert forgotten.originator_id == episode
        # An operator may purge a forgotten episode's agent streams; its receipt stays.
        t = store.recorder.table
        streams = [str(agent_stream_id(episode, a)) for a in demo.topology.agents()]
        with store.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.originator_id.in_(streams)))
    code, output = cli("audit", "verify", "--db", store_url)
    assert code == 0, output
    assert output.startswith("audit trail intact:")


def test_verify_reads_the_decision_events_in_one_pass(sqlite_url: str) -> None:
    # However many events the store holds, the cross-check reads them in the same few
    # statements (one pass), never one query per event.
    from tether.memory.coverage import verify_trail

    def statements_on_events(store: Store) -> int:
        seen: list[str] = []
        listen = functools.partial(_note_statement, seen)
        sa.event.listen(store.engine, "before_cursor_execute", listen)
        try:
            assert verify_trail(store, _keys(store)).intact
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", listen)
        return sum("tether_events" in s for s in seen)

    with Store(sqlite_url) as store:
        refund_desk(store)
        one = statements_on_events(store)
        for first_id in (100, 200, 300):
            refund_desk(store, first_id=first_id)
        assert statements_on_events(store) == one


def _note_statement(seen: list[str], *args: Any) -> None:
    seen.append(str(args[2]))  # (conn, cursor, statement, parameters, context, executemany)


def test_the_cross_check_knows_every_producer_of_records() -> None:
    # A new kind of audited event must be declared where verify looks for it.
    # (The gate audits each stage event that ``decides``: the same declaration, so the
    # list is written out here: a stage event that stops deciding, or a new one that
    # decides, changes this test on purpose.)
    from tether.memory.coverage import AUDITED, DECIDING_STAGES
    from tether.memory.events import (
        ActionExecuted,
        ActionVerified,
        ApprovalSettled,
        BoundariesChecked,
        BudgetReserved,
        EffectUncertain,
        GovernanceDecided,
        StageChecked,
    )

    deciding = {
        BoundariesChecked,
        BudgetReserved,
        GovernanceDecided,
        ApprovalSettled,
        ActionExecuted,
        EffectUncertain,
        ActionVerified,
        StageChecked,  # a topology's own stage
    }
    assert set(DECIDING_STAGES) == deciding
    producers = {*deciding, ApprovalGranted, ApprovalDenied, ApprovalTimedOut}
    others = {EscalationDecided, EpisodeTakenOver, EpisodeCancelled, EpisodeForked}
    assert producers | others == set(AUDITED)


# --- the key verify checks with -----------------------------------------------------------


def test_a_wrong_key_is_named_as_the_wrong_key_not_as_tampering(
    trail: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    right = AuditKey.load(trail.audit_key_path)
    wrong = AuditKey.load(tmp_path / "elsewhere" / "audit.key", create=True)
    monkeypatch.setenv("TETHER_AUDIT_KEY", str(wrong.path))
    code, output = cli("audit", "verify", "--db", trail.url)
    said = " ".join(output.split())
    assert code == 1
    assert f"signed by key {right.id}, not the key given ({wrong.id}, {wrong.path})" in said
    assert "broken" not in said and "altered" not in said


def test_verify_without_a_key_says_where_it_looked_and_creates_none(
    trail: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run from another directory, with no key named: the default file is not there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("TETHER_AUDIT_KEY")
    code, output = cli("audit", "verify", "--db", trail.url)
    assert code == 1
    assert len(output.strip().splitlines()) == 1, output
    said = " ".join(output.split())
    assert f"audit key {elsewhere / '.tether' / 'audit.key'}: no such file" in said
    assert "the default, under the current directory" in said
    assert "--audit-key PATH" in said and "--key PUB.pem" in said
    assert not (elsewhere / ".tether").exists()  # verify never makes a key


def test_the_audit_key_may_follow_the_subcommand(
    trail: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = trail.audit_key_path
    monkeypatch.setenv("TETHER_AUDIT_KEY", str(tmp_path / "absent.key"))
    code, output = cli("audit", "verify", "--audit-key", str(key), "--db", trail.url)
    assert code == 0, output
    assert output.startswith("audit trail intact:")


def test_a_rotated_key_is_named_and_both_keys_verify(trail: Store, tmp_path: Path) -> None:
    # The fleet's key is rotated: the next episode's records are signed by the new one.
    old = AuditKey.load(trail.audit_key_path)
    new = AuditKey.load(tmp_path / "new.key", create=True)
    with Store(trail.url, audit_key=new.path) as rotated:
        refund_desk(rotated, first_id=100)
    first_new = next(r.seq for r in trail.audit.records() if r.key == new.id)
    for key in (old, new):
        (tmp_path / f"{key.id}.pem").write_bytes(public_pem(key.public))
    code, output = cli(
        "audit", "verify", "--db", trail.url, "--key", str(tmp_path / f"{old.id}.pem")
    )
    said = " ".join(output.split())
    assert code == 1
    assert f"record {first_new} is signed by key {new.id}, not the key given ({old.id}" in said
    assert "pass each public key" in said
    # Given both public keys, the whole trail verifies.
    both = ["--key", str(tmp_path / f"{old.id}.pem"), "--key", str(tmp_path / f"{new.id}.pem")]
    code, output = cli("audit", "verify", "--db", trail.url, *both)
    assert code == 0 and output.startswith("audit trail intact:"), output


def test_a_fleet_deciding_while_verify_runs_is_no_gap(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify reads the trail, then the events; an episode that decides in between has
    # events the trail read did not see yet, and they are no gap.
    from tether.memory.coverage import verify_trail

    with Store(sqlite_url) as store:
        refund_desk(store)
        read_trail = store.audit.records

        def records_then_an_episode(episode: str | None = None) -> Iterator[AuditRecord]:
            yield from read_trail(episode)
            refund_desk(store, first_id=100)

        monkeypatch.setattr(store.audit, "records", records_then_an_episode)
        verdict = verify_trail(store, _keys(store))
    assert verdict.intact, verdict.gap
