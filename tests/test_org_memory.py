"""Org memory: facts that supersede instead of overwriting, queryable in time, on both
backends; conflicts between agents settled by policy; a read model rebuilt from events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from tether.memory import Store
from tether.memory.events import subject_stream_id
from tether.memory.org import FactPolicy, OrgMemory, Retention
from tether.runtime.cli import app

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0.replace(day=n)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s


def learn(
    store: Store,
    subject: str,
    key: str,
    statement: str,
    *,
    agent: str,
    at: datetime,
    policy: FactPolicy | None = None,
    valid_from: datetime | None = None,
) -> None:
    events = OrgMemory(store).offer(
        subject,
        key,
        statement,
        {"agent": agent, "episode": "e", "event": f"{agent}/1"},
        at,
        policy or FactPolicy(),
        valid_from=valid_from,
    )
    store.append([], tail=events)


def test_a_newer_fact_supersedes_and_both_stay_queryable_by_time(store: Store) -> None:
    # Ada lived in Lyon from Jan 1st; on Jan 10th we learn she moved to Paris on Jan 8th.
    learn(store, "customer:ada", "city", "lives in Lyon", agent="crm", at=day(2), valid_from=day(1))
    learn(
        store, "customer:ada", "city", "lives in Paris", agent="crm", at=day(10), valid_from=day(8)
    )
    org = OrgMemory(store)
    assert [f.statement for f in org.about("customer:ada")] == ["lives in Paris"]
    # What did we believe on Jan 5th? Lyon. What was true on Jan 9th? Paris.
    assert [f.statement for f in org.about("customer:ada", as_of=day(5))] == ["lives in Lyon"]
    assert [f.statement for f in org.about("customer:ada", valid_at=day(9))] == ["lives in Paris"]
    # Nothing was believed before anything was recorded.
    assert org.about("customer:ada", as_of=day(1)) == []
    old, new = org.about("customer:ada", history=True)
    assert (old.valid_to, old.superseded_at, old.superseded_by) == (day(8), day(10), new.id)
    assert new.source_event == "crm/1" and new.recorded_at == day(10)


def test_keyword_search_and_a_rebuilt_read_model(store: Store) -> None:
    learn(store, "customer:ada", "plan", "pays for the Gold plan", agent="billing", at=day(2))
    learn(store, "customer:bob", "plan", "pays for the Silver plan", agent="billing", at=day(3))
    org = OrgMemory(store)
    assert [f.subject for f in org.search("gold")] == ["customer:ada"]
    assert len(org.search("PLAN")) == 2
    before = org.about("customer:bob", history=True)
    assert org.rebuild() == 2
    assert org.about("customer:bob", history=True) == before


@pytest.mark.parametrize(
    ("policy", "believed", "outcome"),
    [
        (FactPolicy(), "tier: gold", "replaced"),
        (FactPolicy(on_conflict="first_wins"), "tier: silver", "kept"),
        (FactPolicy(on_conflict="prefer", prefer=("billing", "support")), "tier: silver", "kept"),
        (FactPolicy(on_conflict="prefer", prefer=("support", "billing")), "tier: gold", "replaced"),
    ],
)
def test_conflicting_facts_from_two_agents_are_settled_by_policy(
    store: Store, policy: FactPolicy, believed: str, outcome: str
) -> None:
    learn(store, "customer:ada", "tier", "tier: silver", agent="billing", at=day(2))
    learn(store, "customer:ada", "tier", "tier: gold", agent="support", at=day(3), policy=policy)
    org = OrgMemory(store)
    assert [f.statement for f in org.about("customer:ada")] == [believed]
    [conflict] = org.conflicts_about("customer:ada")
    assert (conflict.held, conflict.offered, conflict.outcome) == (
        "tier: silver",
        "tier: gold",
        outcome,
    )
    assert conflict.policy == policy.on_conflict and conflict.reason


def test_the_same_agent_correcting_itself_is_no_conflict(store: Store) -> None:
    learn(store, "customer:ada", "tier", "tier: silver", agent="billing", at=day(2))
    learn(store, "customer:ada", "tier", "tier: gold", agent="billing", at=day(3))
    assert OrgMemory(store).conflicts_about("customer:ada") == []


def test_the_facts_command(store: Store) -> None:
    learn(store, "customer:ada", "city", "lives in Lyon", agent="crm", at=day(2))
    learn(store, "customer:ada", "city", "lives in Paris", agent="crm", at=day(10))
    run = CliRunner().invoke
    now = run(app, ["facts", "customer:ada", "--json", "--db", store.url])
    assert now.exit_code == 0, now.output
    assert [f["statement"] for f in json.loads(now.output)] == ["lives in Paris"]
    then = run(app, ["facts", "customer:ada", "--as-of", "2026-01-05", "--db", store.url])
    assert "lives in Lyon" in then.output and "Paris" not in then.output
    unknown = run(app, ["facts", "customer:nobody", "--db", store.url])
    assert unknown.exit_code == 1 and "no facts about 'customer:nobody'" in unknown.output
    bad = run(app, ["facts", "customer:ada", "--as-of", "last tuesday", "--db", store.url])
    assert bad.exit_code == 1 and "--as-of 'last tuesday': not an ISO time" in bad.output
    rebuilt = run(app, ["facts", "--rebuild", "--db", store.url])
    assert "rebuilt the facts read model from 2 events" in rebuilt.output


def test_retention_forgets_by_age_by_cap_and_by_disuse_and_says_why(store: Store) -> None:
    for i, key in enumerate(["a", "b", "c", "d"], start=1):
        learn(store, "customer:ada", key, f"fact {key}", agent="crm", at=day(i))
    org = OrgMemory(store)
    # Support recalls her facts on Jan 20th: the use is recorded.
    assert [f.key for f in org.recall("customer:ada", by="support@e1", at=day(20))] == [
        "a",
        "b",
        "c",
        "d",
    ]
    [a] = [f for f in org.about("customer:ada") if f.key == "a"]
    assert a.last_used_at == day(20)
    # On Jan 30th, with a 5-day decay, all four are unused for too long (decay is checked
    # before the cap, so the cap has nothing left to do).
    forgotten = org.retain(Retention(unused_for=timedelta(days=5), max_per_subject=3), day(30))
    assert {(e.why, tuple(e.facts)) for e in forgotten} == {
        ("decay", tuple(f.id for f in org.about("customer:ada", history=True)))
    }
    assert org.about("customer:ada") == []
    gone = org.about("customer:ada", history=True)
    assert all(f.forgotten_why == "decay: unused for 5 days" for f in gone)
    # The forgetting is in the log, with its rule.
    events = store.read(subject_stream_id("customer:ada"))
    assert [type(e).__name__ for e in events][-1] == "FactForgotten"


def test_a_cap_keeps_the_newest_facts(store: Store) -> None:
    for i, key in enumerate(["a", "b", "c"], start=1):
        learn(store, "customer:bob", key, f"fact {key}", agent="crm", at=day(i))
    org = OrgMemory(store)
    [event] = org.retain(Retention(max_per_subject=2), day(5))
    assert (event.why, event.rule) == ("cap", "at most 2 facts per subject")
    assert [f.key for f in org.about("customer:bob")] == ["b", "c"]
    out = CliRunner().invoke(app, ["retain", "--ttl-days", "1", "--db", store.url])
    assert out.exit_code == 0 and "forgot 2 facts about customer:bob: ttl" in out.output
    none = CliRunner().invoke(app, ["retain", "--db", store.url])
    assert none.exit_code == 1 and "give at least one rule" in none.output


def test_concurrent_catch_ups_fold_each_event_once(store: Store) -> None:
    import threading

    for i in range(30):
        learn(store, f"customer:{i}", "k", f"fact {i}", agent="crm", at=day(2))
    errors: list[BaseException] = []

    def catch_up() -> None:
        try:
            OrgMemory(store).catch_up()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=catch_up) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(OrgMemory(store).search("fact")) == 30
