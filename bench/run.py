"""tether's benchmark: ratios against baselines measured in the same run.

The last line of stdout is one JSON object:

- ``gate_step_us``: median in-process time of one governed no-op action (all seven
  stages, recorded to SQLite), in microseconds.
- ``gate_vs_ray_call``: median time of one governed no-op action executed in a host actor,
  divided by the median of a bare call to the same actor with the same payload. The no-op
  is read-only and has no rails: the gate's cheapest path.
- ``gate_effect_vs_ray_call``: the same for the full path a real effect takes: a payment
  (a tool with a side effect) under two rails (a spend cap, an allow-list of payees) and a
  policy rule, its decision written ahead of the effect, the effect in the effects ledger,
  every stage in the signed audit trail; against a bare call to the same actor with the
  same payload. ``gate_effect_step_us``: that action in process, in microseconds.
- ``sealed_vs_plain_step``: the same governed no-op in an episode about a data subject
  (personal fields sealed under the subject's key) divided by one about nobody.
- ``append_vs_sqlite``: events appended per second through the store in batches of 1,000,
  divided by rows per second that raw ``sqlite3`` inserts with one ``executemany`` in one
  transaction: same table, same row sizes, same directory, same journal mode; the median
  of five rounds that alternate the two.
- ``append_single_per_s``: events per second appended one per commit.
- ``replay_events_per_s``: events per second folded into the timeline of a 100,000-event
  episode (read, decode, fold; no snapshot); the median of three loads.
- ``load_with_snapshot_ratio``: time to load that timeline from its snapshot divided by
  the time to fold it from scratch (medians of three).
- ``policy_decision_us``: median time of one governance decision under a 50-rule policy
  with provenance checks (``bench/policy.py``).
- ``policy_vs_cedarpy``: that time divided by cedarpy's decision time for the equivalent
  Cedar policy set, given the same work: the same parsed inputs, the same rules evaluated
  (the grant and the called tool's five; Cedar gets tether's index by tool as a policy set
  per tool), the marshalling of the request in both timed regions, the same mix of
  allowed and denied calls, alternated call by call. ``cedarpy_all_policies_decision_us``:
  Cedar over all 51 policies, for scale.
- ``agents_per_s_logical`` and ``actors_per_s``: agents started per second at equal
  counts (``start_agents`` of them): as logical agents on a shared host actor (the actor
  spawned, the agents rebuilt and given their tasks in one transaction), and as one bare
  Ray actor each (constructed and given its task); ``logical_vs_actors_start`` is their
  ratio, the median of three alternating rounds (``bench/fleet.py``). Memory per agent at
  rest, after start: ``rss_per_agent_logical_mb`` (the host actor's RSS over its agents)
  and ``rss_per_agent_actor_mb`` (the actors' RSS summed, over the agents); RSS counts
  pages the actors' processes share once per process, so ``pss_per_agent_*_mb`` gives
  the same split by PSS, which counts each shared page once.
- ``msg_vs_ray``: messages delivered per second into agents' mailboxes through a host
  actor (pipelined; each a durable append) divided by raw pipelined calls per second to a
  Ray actor with the same arguments; the median of three alternating rounds.
  ``send_message_via_gate_per_s`` is the rate when agents send through the whole gate.
- ``restart_ms``: median milliseconds from a host actor's worker dying inside a tool call
  to its agent running its next action on a new host actor.
- ``fleet_10k_rss_mb``: resident memory of a host actor carrying 10,000 started agents at
  rest (``host_actor_rss_mb``: the same actor with one agent; ``rss_per_agent_at_10k_kb``:
  what each agent past the first adds).
- ``fanout_side_by_side_ratio``: a map-reduce of 8 quarter-second items over 2 worker
  copies, its time with the copies sharing one host actor divided by its time with a host
  actor each.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench import fleet, policy
from tether.agents import ScriptedModel, ToolCall, ToolContext, say, tool
from tether.memory import SequentialIds, StepClock, Store, SystemClock
from tether.memory._codec import new_mapper
from tether.memory.sources import RandomIds
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    AllowedValues,
    Grant,
    Policy,
    Role,
    Rule,
    SpendCap,
    Supervisor,
    Topology,
    When,
)
from tether.topologies.loader import Loaded

PAYLOAD = "x" * 256


class Payload(BaseModel):
    payload: str = ""


@tool(read_only=True)
def noop(args: Payload, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing."""
    return {}


TOPOLOGY = Topology(
    name="bench",
    root=Supervisor(
        name="root",
        children=(
            Agent(
                name="bench",
                role=Role("bench", grants=(Grant("noop"),)),
                model=ScriptedModel([say("idle")]),
                tools=(noop,),
            ),
        ),
    ),
)
CALL = ToolCall("noop", {"payload": PAYLOAD}, id="bench")


class Payment(BaseModel):
    to: str
    amount: Decimal
    payload: str = ""


@tool()
def pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay someone: a side effect, so the gate writes ahead and keeps an effects ledger."""
    return {"paid": str(args.amount), "to": args.to}


# The full path a real effect takes: two rails (a spend cap, an allow-list of payees) and
# a policy rule, all checked and passed; the decision written ahead of the effect, the
# effect in the effects ledger, every stage signed into the audit trail.
EFFECT_TOPOLOGY = Topology(
    name="bench_effect",
    root=Supervisor(
        name="root",
        children=(
            Agent(
                name="bench",
                role=Role("bench", grants=(Grant("pay", tier="low"),)),
                model=ScriptedModel([say("idle")]),
                tools=(pay,),
                rails=(
                    SpendCap(tool="pay", field="amount", per_call=Decimal("500")),
                    AllowedValues(tool="pay", field="to", values=("ada@example.com",)),
                ),
            ),
        ),
    ),
    policy=Policy((Rule("pay-cap", "deny", tools=("pay",), when=(When("amount", "gt", "400"),)),)),
)
EFFECT = ToolCall("pay", {"to": "ada@example.com", "amount": "120", "payload": PAYLOAD}, id="bench")


def _median_s(run: Callable[[], object], times: int = 3) -> float:
    """The median wall time of ``times`` runs, in seconds."""
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def gate_in_process(
    db: Path,
    n: int,
    subject: str | None = None,
    topology: Topology = TOPOLOGY,
    call: ToolCall = CALL,
) -> float:
    """Median µs of one governed action (by default a no-op) through the gate, recorded
    to SQLite; with a ``subject``, its personal fields are sealed under the subject's
    key."""
    with Store(f"sqlite:///{db}") as store:
        clock, ids = SystemClock(), SequentialIds()
        host = Host(topology, store, clock, ids)
        episode = (
            RootSupervisor(topology, store, LocalHost(host), StepClock(), ids)
            .start({}, {}, subject=subject)
            .episode_id
        )
        for _ in range(50):
            host.act(episode, "bench", call)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = host.act(episode, "bench", call)
            samples.append(time.perf_counter() - t0)
            assert result.outcome == "executed", result
    return _median_us(samples)


def gate_on_ray(
    db: Path, n: int, topology: Topology = TOPOLOGY, call: ToolCall = CALL
) -> tuple[float, float]:
    """(governed µs, bare µs): medians of calls to one host actor, interleaved: ``call``
    through the gate, and a bare call to the same actor with the same payload."""
    import ray

    from tether.runtime.actor import ensure_ray, spawn_host
    from tether.runtime.handles import RayHost

    ensure_ray()
    with Store(f"sqlite:///{db}") as store:
        actor = spawn_host(Loaded(topology, {"kind": "python", "name": "bench"}), store)
        try:
            episode = (
                RootSupervisor(topology, store, RayHost(lambda: actor), SystemClock(), RandomIds())
                .start({}, {})
                .episode_id
            )
            governed: list[float] = []
            bare: list[float] = []
            for i in range(50 + n):  # alternate call by call: the machine's drift hits both
                t0 = time.perf_counter()
                result = ray.get(actor.act.remote(episode, "bench", call))
                t1 = time.perf_counter()
                ray.get(actor.echo.remote(episode, "bench", call))
                t2 = time.perf_counter()
                assert result.outcome == "executed", result
                if i >= 50:  # the first 50 warm up
                    governed.append(t1 - t0)
                    bare.append(t2 - t1)
        finally:
            ray.kill(actor)
    return _median_us(governed), _median_us(bare)


def _stage_events(n: int) -> list[Any]:
    from datetime import UTC, datetime

    from tether.memory.events import BoundariesChecked
    from tether.memory.store import new_event

    stream, at = uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC)
    return [
        new_event(
            BoundariesChecked,
            stream,
            i + 1,
            at,
            action=i,
            decision="pass",
            reason="arguments match the schema and every rail",
            violations=[],
        )
        for i in range(n)
    ]


def appends(tmp: Path, n: int = 20_000, batch: int = 1_000, rounds: int = 5) -> dict[str, float]:
    """Batched and single appends through the store, and raw sqlite3 on the same rows.

    The two alternate, ``rounds`` times, each into a new file; the ratio is the median of
    the rounds' ratios, so a slow spell of the machine hits both sides alike.
    """
    events = _stage_events(n)
    mapper = new_mapper()
    sizes = [len(mapper.to_stored_event(e).state) for e in events[:100]]
    topic = mapper.to_stored_event(events[0]).topic
    stream = str(uuid.uuid4())
    rows = [(stream, i + 1, topic, b"x" * sizes[i % len(sizes)], None) for i in range(n)]
    ratios, batched_rates, raw_rates = [], [], []
    for r in range(rounds):
        with Store(f"sqlite:///{tmp / f'append{r}.db'}") as store:
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                store.append(events[i : i + batch])
            batched = n / (time.perf_counter() - t0)
        raw = _raw_sqlite(tmp / f"raw{r}.db", rows)
        ratios.append(batched / raw)
        batched_rates.append(batched)
        raw_rates.append(raw)
    singles = _stage_events(2_000)
    with Store(f"sqlite:///{tmp / 'single.db'}") as store:
        t0 = time.perf_counter()
        for e in singles:
            store.append([e])
        single = len(singles) / (time.perf_counter() - t0)
    print(
        f"appends (median of {rounds}): {statistics.median(batched_rates):,.0f} events/s "
        f"batched, {single:,.0f}/s one per commit; raw sqlite3 "
        f"{statistics.median(raw_rates):,.0f} rows/s in one transaction",
        file=sys.stderr,
    )
    return {
        "append_vs_sqlite": round(statistics.median(ratios), 3),
        "append_single_per_s": round(single),
        "raw_sqlite_rows_per_s": round(statistics.median(raw_rates)),
    }


def _raw_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> float:
    """Rows per second that raw sqlite3 inserts with one executemany in one transaction,
    into a table like tether's, with tether's journal mode."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, originator_id VARCHAR(100) NOT NULL, "
        "originator_version INTEGER NOT NULL, topic VARCHAR(200) NOT NULL, "
        "state BLOB NOT NULL, catalog VARCHAR(200), "
        "UNIQUE (originator_id, originator_version))"
    )
    db.execute("CREATE INDEX t_catalog ON t (catalog, id) WHERE catalog IS NOT NULL")
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO t (originator_id, originator_version, topic, state, catalog) "
        "VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - t0)
    db.close()
    return rate


def replay(tmp: Path, actions: int = 11_112) -> dict[str, float]:
    """Fold a 100,000-event episode (9 events per governed action), with and without a
    snapshot."""
    from tether.memory.episodes import load_timeline

    with Store(f"sqlite:///{tmp / 'replay.db'}") as store:
        clock, ids = SystemClock(), SequentialIds()
        host = Host(TOPOLOGY, store, clock, ids)
        episode = (
            RootSupervisor(TOPOLOGY, store, LocalHost(host), clock, ids).start({}, {}).episode_id
        )
        for _ in range(actions):
            host.act(episode, "bench", CALL)
        n = store.recorder.max_notification_id() or 0
        scratch = _median_s(lambda: load_timeline(store, episode, snapshots=False))
        load_timeline(store, episode)  # folds from scratch once more and writes the snapshot
        snapped = _median_s(lambda: load_timeline(store, episode))
    print(
        f"replay (median of 3): {n:,} events folded in {scratch:.2f} s; from the snapshot "
        f"in {snapped:.2f} s",
        file=sys.stderr,
    )
    return {
        "replay_events_per_s": round(n / scratch),
        "replay_events": n,
        "load_with_snapshot_ratio": round(snapped / scratch, 3),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        os.environ["TETHER_AUDIT_KEY"] = str(Path(tmp) / "audit.key")
        step_us = gate_in_process(Path(tmp) / "inproc.db", 2000)
        sealed_us = gate_in_process(Path(tmp) / "sealed.db", 2000, subject="customer:ada")
        print(
            f"governed no-op in process (SQLite): {step_us:.0f} µs; with its personal "
            f"fields sealed for a data subject: {sealed_us:.0f} µs",
            file=sys.stderr,
        )
        effect_us = gate_in_process(
            Path(tmp) / "effect.db", 2000, topology=EFFECT_TOPOLOGY, call=EFFECT
        )
        print(
            f"governed payment in process (two rails, a policy rule, written ahead, "
            f"effects ledger, audit; SQLite): {effect_us:.0f} µs",
            file=sys.stderr,
        )
        governed_us, bare_us = gate_on_ray(Path(tmp) / "ray.db", 2000)
        print(
            f"governed no-op in a host actor: {governed_us:.0f} µs; bare actor call: "
            f"{bare_us:.0f} µs",
            file=sys.stderr,
        )
        paid_us, paid_bare_us = gate_on_ray(
            Path(tmp) / "ray_effect.db", 2000, topology=EFFECT_TOPOLOGY, call=EFFECT
        )
        print(
            f"governed payment in a host actor: {paid_us:.0f} µs; bare actor call: "
            f"{paid_bare_us:.0f} µs",
            file=sys.stderr,
        )
        stored = appends(Path(tmp))
        replayed = replay(Path(tmp))
        decided = policy.measure()
        fleets = fleet.measure(Path(tmp))
        print(
            f"policy of 50 rules with provenance checks: {decided['policy_decision_us']:.1f} "
            f"µs a decision; cedarpy: {decided['cedarpy_decision_us']:.1f} µs",
            file=sys.stderr,
        )
    result = {
        "gate_step_us": round(step_us, 1),
        "gate_vs_ray_call": round(governed_us / bare_us, 3),
        "gate_effect_step_us": round(effect_us, 1),
        "gate_effect_vs_ray_call": round(paid_us / paid_bare_us, 3),
        "sealed_vs_plain_step": round(sealed_us / step_us, 3),
        **stored,
        **replayed,
        **decided,
        **fleets,
        "governed_ray_call_us": round(governed_us, 1),
        "bare_ray_call_us": round(bare_us, 1),
        "governed_effect_ray_call_us": round(paid_us, 1),
        "bare_effect_ray_call_us": round(paid_bare_us, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
