"""The root supervisor: starts an episode, routes handoffs, and ends or suspends it.

It runs in the driver and talks to agents through a host handle: a Ray host actor in a
fleet, a plain ``Host`` in tests. What it records is the episode stream; what the agents
record is theirs. An episode waiting for a person is suspended, not failed: its agents
keep their state in the store, and ``resume`` continues it from there.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from tether.agents.loop import AgentOutcome
from tether.memory.audit import episode_act
from tether.memory.episodes import runnable
from tether.memory.errors import EpisodeNotFound, HostError, TopologyChanged
from tether.memory.events import (
    AgentFailed,
    AgentFinished,
    AgentHandedOff,
    AgentRestarted,
    BudgetGranted,
    EpisodeCancelled,
    EpisodeCompleted,
    EpisodeEscalated,
    EpisodeFailed,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeSuspended,
    EpisodeTakenOver,
    TaskAssigned,
    TopologyChangeAccepted,
    agent_stream_id,
)
from tether.memory.leases import DEFAULT_TTL_S
from tether.memory.sources import Clock, Ids
from tether.memory.store import Journal, Store
from tether.topologies.topology import Topology

from ._lease import Held
from .escalation import Escalations, partial_results
from .handles import AgentHost
from .restarts import RestartPolicy, last_task

MAX_HANDOFFS = 50
"""Handoffs one piece of work (the episode's, or a delegated task) may make before the
supervisor calls it a loop and fails it."""


@dataclass(frozen=True)
class EpisodeReport:
    """Where an episode stands after the supervisor stopped working on it."""

    episode_id: uuid.UUID
    """The episode."""
    status: Literal["completed", "waiting", "failed", "cancelled"]
    """completed, waiting (for a person), failed, or cancelled."""
    agent: str
    """The agent that finished, waits, or failed."""
    output: str = ""
    """The final answer, or why it failed."""
    waiting: tuple[str, ...] = ()
    """Approval ids it waits for."""


@dataclass(frozen=True)
class Ended:
    """Where a piece of work stands once the supervisor can take it no further: the
    episode's, or a task an agent delegated."""

    status: Literal["finished", "waiting", "failed"]
    agent: str
    """The agent that answered, waits, or failed."""
    output: str = ""
    """The answer, or why it failed (every supervisor up the tree gave up)."""
    waiting: tuple[str, ...] = ()
    """Approval ids it waits for."""
    held: frozenset[str] = frozenset()
    """The agents held up while it waits (they take no other work until it goes on)."""


Recorded = dict[str, tuple[str, AgentOutcome | None]]
"""Delegated work on record, by key: the agent that last got it, and how that agent's
task ended if it went on to other work since (None: it is still its task)."""


def ended_report(events: list[Any]) -> EpisodeReport | None:
    """How an episode ended, from its own stream; None while it has not."""
    episode_id, last = events[0].originator_id, events[-1]
    if isinstance(last, EpisodeCompleted):
        return EpisodeReport(episode_id, "completed", last.agent, last.output)
    if isinstance(last, EpisodeFailed):
        return EpisodeReport(episode_id, "failed", last.agent, last.reason)
    if isinstance(last, EpisodeCancelled):
        return EpisodeReport(episode_id, "cancelled", "", f"cancelled by {last.by}: {last.reason}")
    return None


def topology_changes(events: list[Any], now: dict[str, str] | None) -> list[str]:
    """What changed in an episode's topology since it started (or since a person last
    accepted a change), in words, given its fingerprint ``now``; empty when nothing did,
    or when it cannot be told (an episode recorded before tether kept fingerprints)."""
    recorded = events[0].fingerprint
    for e in events:
        if isinstance(e, TopologyChangeAccepted):
            recorded = e.fingerprint
    if not recorded or not now:
        return []
    names = {"file": "the topology file", "policy": "its policy (grants, rails, tools)"}
    return [
        f"{names.get(k, k)} changed (sha256 {recorded[k][:8]}… → {now[k][:8]}…)"
        for k in sorted(recorded.keys() & now.keys())
        if recorded[k] != now[k]
    ]


class RootSupervisor:
    """Runs episodes of one topology."""

    def __init__(
        self,
        topology: Topology,
        store: Store,
        host: AgentHost,
        clock: Clock,
        ids: Ids,
        *,
        sleep: Callable[[float], None] = time.sleep,
        escalations: Escalations | None = None,
        owner: str = "tether",
        fingerprint: dict[str, str] | None = None,
        lease_ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.owner = owner
        """Who runs episodes through this supervisor (``tether resume by alice``): their
        leases name it."""
        self.fingerprint = fingerprint
        """Hashes of the topology as loaded now (``Loaded.fingerprint``): recorded when an
        episode starts, compared when one resumes. None: not compared."""
        self.lease_ttl_s = lease_ttl_s
        self.held: Held | None = None
        """The lease of the episode being run, while it runs."""
        self.topology = topology
        self.store = store
        self.host = host
        self.clock = clock
        self.ids = ids
        self.escalations = escalations or Escalations(store, clock)
        """Where it asks a person when it gives up."""
        self.on_episode: Callable[[uuid.UUID], None] | None = None
        """Told a new episode's id once its start is recorded (progress displays)."""
        self.restarts = RestartPolicy(topology, store, sleep=sleep)
        """Who restarts a failed agent, and when a supervisor gives up. ``sleep`` is how it
        waits before a restart (re-execution does not wait)."""
        self._deciding = threading.RLock()
        """Held while a restart is decided and recorded: delegated work in several lanes
        may fail at once, and each supervisor's intensity is counted over all of it."""

    def start(
        self,
        task: dict[str, Any],
        context: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> EpisodeReport:
        """Start an episode: the entry agent gets ``task``; ``context`` is trusted data;
        ``subject`` is the data subject it is about (its personal data is sealed). Its
        lease is taken first, and held until the supervisor stops working on it."""
        episode_id = self.ids.new()
        with self._hold(episode_id, take_over=False):
            journal = self._open(task, context, source, subject, episode_id)
            return self._drive(journal, self.topology.entry, task, "operator", task)

    @contextlib.contextmanager
    def _hold(self, episode_id: uuid.UUID, *, take_over: bool) -> Iterator[Held]:
        """Hold the episode's lease while the body runs (``EpisodeLeased`` if another
        runner holds it): renewed meanwhile, released after."""
        lease, taken = self.store.leases.take(
            episode_id, self.owner, ttl_s=self.lease_ttl_s, take_over=take_over
        )
        with Held(self.store.leases, lease, taken, self.lease_ttl_s) as held:
            self.held = held
            try:
                yield held
            finally:
                self.held = None

    @property
    def _fence(self) -> int | None:
        return self.held.token if self.held is not None else None

    def open(
        self,
        task: dict[str, Any],
        context: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> uuid.UUID:
        """Record an episode's start without running any agent: its agents are then
        started, messaged and run through their host (``Host.start``, ``send``, ``run``)."""
        return self._open(task, context, source, subject, self.ids.new()).stream_id

    def _open(
        self,
        task: dict[str, Any],
        context: dict[str, Any] | None,
        source: dict[str, Any] | None,
        subject: str | None,
        episode_id: uuid.UUID,
    ) -> Journal:
        journal = Journal(self.store, episode_id, self.clock)
        journal.subject = subject
        if self.held is not None and self.held.episode_id == episode_id:
            journal.fence = self.held.fencing
        journal.record(
            EpisodeStarted,
            topology=self.topology.name,
            source=source or {"kind": "python", "name": self.topology.name},
            agents=list(self.topology.agents()),
            entry=self.topology.entry,
            input=task,
            context=context or {},
            subject=subject,
            fingerprint=self.fingerprint,
        )
        journal.flush()
        if self.on_episode is not None:
            self.on_episode(journal.stream_id)
        return journal

    def resume(
        self,
        episode_id: uuid.UUID,
        *,
        take_over: bool = False,
        accept_changed: bool = False,
    ) -> EpisodeReport:
        """Continue an episode from its events: a suspended one, or one a crash cut short.

        Its lease is taken first: ``EpisodeLeased`` if another runner holds it (unless
        ``take_over``; an expired lease, or one whose process is gone from this host, is
        taken over anyway, and the take-over recorded). A topology that changed since the
        episode started is refused with ``TopologyChanged`` unless ``accept_changed``."""
        events = self.store.read(episode_id)
        if not events or not isinstance(events[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        started = runnable(events[0])
        ended = ended_report(events)
        if ended is not None:
            return ended
        changes = topology_changes(events, self.fingerprint)
        if changes and not accept_changed:
            raise TopologyChanged(str(episode_id), changes)
        with self._hold(episode_id, take_over=take_over) as held:
            events = self.store.read(episode_id)  # as it stands now that nobody else runs it
            ended = ended_report(events)
            if ended is not None:
                return ended
            last = events[-1]
            journal = Journal.after(self.store, episode_id, self.clock, events)
            journal.subject = started.subject
            journal.fence = held.fencing
            if held.previous is not None:
                self._took_over(journal, held)
            if changes:
                assert self.fingerprint is not None
                journal.record(
                    TopologyChangeAccepted,
                    by=self.owner,
                    changes=changes,
                    fingerprint=self.fingerprint,
                )
                journal.flush()
            if isinstance(last, EpisodeEscalated):
                return self._decided(journal, last, started.input)
            agent = self._active_agent(episode_id)
            journal.record(EpisodeResumed, agent=agent)
            journal.flush()
            return self._drive(journal, agent, None, "operator", started.input, resumed=True)

    def _took_over(self, journal: Journal, held: Held) -> None:
        """Record (and audit) that this runner took the episode from one that had not let
        it go: the other's appends are refused from now on."""
        assert held.previous is not None
        was, why = held.previous
        event = journal.record(
            EpisodeTakenOver,
            token=held.token,
            owner=self.owner,
            previous={
                "owner": was.owner,
                "host": was.host,
                "pid": was.pid,
                "token": was.token,
                "expires": was.expires,
            },
            why=why,
        )
        journal.pending_audit.append(
            episode_act(
                str(journal.stream_id),
                "lease",
                "taken_over",
                self.owner,
                event.at.isoformat(),
                f"{journal.stream_id}/{event.originator_version}",
            )
        )
        journal.flush()

    def _active_agent(self, episode_id: uuid.UUID) -> str:
        """The agent given the episode's own work last (delegated tasks aside: the
        delegator that waits for them is resumed, and resumes them)."""
        streams = {agent_stream_id(episode_id, name): name for name in self.topology.agents()}
        assigned = [
            e
            for _, e in self.store.read_streams(streams)
            if isinstance(e, TaskAssigned) and "call" not in e.task
        ]
        return assigned[-1].agent if assigned else self.topology.entry

    def _drive(
        self,
        journal: Journal,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        episode_input: dict[str, Any],
        *,
        resumed: bool = False,
    ) -> EpisodeReport:
        """Take the episode's work as far as it goes, and record where it ended."""
        episode_id = journal.stream_id
        ended = self._work(journal, agent, task, by, episode_input, resumed=resumed)
        if ended.status == "finished":
            journal.record(EpisodeCompleted, agent=ended.agent, output=ended.output)
            journal.flush()
            return EpisodeReport(episode_id, "completed", ended.agent, ended.output)
        if ended.status == "waiting":
            journal.record(EpisodeSuspended, agent=ended.agent, waiting=list(ended.waiting))
            journal.flush()
            return EpisodeReport(episode_id, "waiting", ended.agent, waiting=ended.waiting)
        return self._gave_up(journal, ended.agent, ended.output)

    def _work(
        self,
        journal: Journal,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        episode_input: dict[str, Any],
        call: str | None = None,
        outcome: AgentOutcome | None = None,
        *,
        resumed: bool = False,
    ) -> Ended:
        """Run one piece of work through its agents — handoffs, the work they delegate,
        restarts — until it is answered, waits for a person, or fails because no
        supervisor up the tree will restart it. ``call`` is the key of a delegated task
        (None: the episode's own work); ``outcome``, how its agent's run already ended;
        ``resumed``: the work was under way when the episode stopped, so what its agent
        delegated then may be under way or done too."""
        episode_id = journal.stream_id
        answers: list[dict[str, Any]] | None = None
        handoffs = 0
        while True:
            if outcome is None:
                try:
                    outcome = self.host.run(
                        episode_id, agent, task, by, answers or None, fence=self._fence
                    )
                except HostError as e:
                    # Ray's worker died under the agent: a new host rebuilds it from the
                    # store and it goes on where its events stop (an action cut short runs
                    # again under the same idempotency key). Counted like any restart.
                    with self._deciding:
                        at = self._last_at(episode_id, agent)
                        found = self.restarts.who_restarts(journal, agent, str(e), at)
                        if isinstance(found, str):
                            return Ended("failed", agent, found)
                        sup, n, _, _ = found
                        self.host.replace(agent)
                        self.restarts.record(journal, agent, agent, str(e), "host", n, sup.name)
                    last = last_task(self.store, episode_id, agent)
                    if last is not None and (task is None or last.task == task):
                        task = None  # it has its task on record; the new host reads it there
                    continue  # (answers are taken once: delivering them again is harmless)
            done, outcome, answers = outcome, None, None
            looked, resumed = resumed, False  # what it delegates from now on is new
            if done.outcome == "delegated":
                found_answers = self._answer(journal, agent, done.calls, episode_input, looked)
                if isinstance(found_answers, Ended):  # some of the work waits for a person
                    return replace(found_answers, held=found_answers.held | {agent})
                task, answers = None, found_answers
                continue
            if done.outcome == "handed_off" and done.handoff_to:
                handoffs += 1
                if handoffs > MAX_HANDOFFS:
                    why = f"more than {MAX_HANDOFFS} handoffs: a handoff loop"
                    return Ended("failed", agent, why)
                task = {
                    "handoff_from": agent,
                    "reason": done.reason,
                    "note": done.output,
                    "input": episode_input,
                    **({"call": call} if call is not None else {}),
                }
                by, agent = agent, done.handoff_to
                continue
            if done.outcome == "finished":
                return Ended("finished", agent, done.output)
            if done.outcome == "waiting":
                return Ended("waiting", agent, waiting=done.waiting, held=frozenset({agent}))
            reason = done.output or "the agent failed"
            with self._deciding:
                restarted = self.restarts.restart(journal, agent, reason, episode_input, call)
            if isinstance(restarted, str):
                return Ended("failed", agent, restarted)
            agent, task, by = restarted

    def _answer(
        self,
        journal: Journal,
        delegator: str,
        calls: tuple[dict[str, Any], ...],
        episode_input: dict[str, Any],
        resumed: bool,
    ) -> list[dict[str, Any]] | Ended:
        """Run the work ``delegator`` gave its workers and collect the answers, in the
        order of its calls; or, when some of it waits for a person, that (the rest is
        taken as far as it goes first). Work for agents in different lanes of the host
        (host actors of their own) runs side by side; in one lane, in turn.
        ``resumed``: the work was given before the episode stopped, and the record says
        how far each piece got."""
        recorded: Recorded = self._recorded_calls(journal.stream_id) if resumed else {}
        lanes: dict[str, list[dict[str, Any]]] = {}
        for c in calls:
            on_record = recorded.get(str(c["key"]))
            agent = on_record[0] if on_record is not None else str(c["to"])
            lanes.setdefault(self.host.lane(agent), []).append(c)

        def run(lane: list[dict[str, Any]]) -> dict[str, Ended]:
            return self._answer_lane(journal, delegator, lane, episode_input, recorded)

        if len(lanes) == 1:
            [ended] = [run(lane) for lane in lanes.values()]
        else:
            with ThreadPoolExecutor(len(lanes), thread_name_prefix="tether-lane") as pool:
                ended = {k: e for done in pool.map(run, lanes.values()) for k, e in done.items()}
        answers: list[dict[str, Any]] = []
        waiting: list[Ended] = []
        for c in calls:
            e = ended.get(str(c["key"]))
            if e is None:
                continue  # not given: its worker waits on earlier work
            if e.status == "waiting":
                waiting.append(e)
            else:
                answers.append(
                    {"key": c["key"], "by": e.agent, "outcome": e.status, "answer": e.output}
                )
        if waiting:
            ids = tuple(i for w in waiting for i in w.waiting)
            held = frozenset(a for w in waiting for a in w.held)
            return Ended("waiting", waiting[0].agent, waiting=ids, held=held)
        return answers

    def _answer_lane(
        self,
        journal: Journal,
        delegator: str,
        calls: list[dict[str, Any]],
        episode_input: dict[str, Any],
        recorded: Recorded,
    ) -> dict[str, Ended]:
        """Run the delegated work of one lane in turn: how each piece ended, by key. A
        piece for a worker that waits on an earlier piece is not given (yet)."""
        out: dict[str, Ended] = {}
        held: frozenset[str] = frozenset()
        for c in calls:
            key = str(c["key"])
            on_record = recorded.get(key)
            if on_record is None:
                if str(c["to"]) in held:
                    continue  # given once the work it waits on goes on
                task = {
                    "task": c["task"],
                    "from": delegator,
                    "call": key,
                    "input": episode_input,
                }
                ended = self._work(journal, str(c["to"]), task, delegator, episode_input, key)
            else:
                # Resumed: the work was given before; go on from where its record stops.
                agent, outcome = on_record
                if outcome is not None and outcome.outcome == "finished":
                    ended = Ended("finished", agent, outcome.output)
                elif outcome is not None and outcome.outcome == "failed":
                    ended = Ended("failed", agent, outcome.output)  # its supervisor gave up
                else:
                    ended = self._work(
                        journal, agent, None, delegator, episode_input, key, outcome, resumed=True
                    )
            out[key] = ended
            if ended.status == "waiting":
                held |= ended.held
        return out

    def _recorded_calls(self, episode_id: uuid.UUID) -> Recorded:
        """The delegated work this episode's agents were given (one read of every agent
        stream, made only on a resume: some of the work may be under way or done)."""
        streams = {agent_stream_id(episode_id, n): n for n in self.topology.agents()}
        last: dict[str, str] = {}  # key -> the agent that got it last
        current: dict[str, str | None] = {}  # agent -> the key of its current task
        ended: dict[tuple[str, str], AgentOutcome | None] = {}
        for _, e in self.store.read_streams(streams):
            name = streams[e.originator_id]
            if isinstance(e, TaskAssigned):
                key = e.task.get("call")
                current[name] = key if isinstance(key, str) else None
                if isinstance(key, str):
                    last[key] = name
                    ended[(name, key)] = None
                continue
            key = current.get(name)
            if key is None:
                continue
            if isinstance(e, AgentFinished):
                ended[(name, key)] = AgentOutcome(name, "finished", e.output)
            elif isinstance(e, AgentFailed):
                ended[(name, key)] = AgentOutcome(name, "failed", e.reason)
            elif isinstance(e, AgentHandedOff):
                ended[(name, key)] = AgentOutcome(
                    name, "handed_off", e.note, handoff_to=e.to, reason=e.reason
                )
        out: Recorded = {}
        for key, name in last.items():
            if current.get(name) == key:
                out[key] = (name, None)  # still its task: its host goes on with it
            else:
                gone = AgentOutcome(name, "failed", "interrupted: it was given other work")
                out[key] = (name, ended.get((name, key)) or gone)
        return out

    def _last_at(self, episode_id: uuid.UUID, agent: str) -> datetime:
        """The time of the agent's last recorded event (or now, if it has none)."""
        history = self.store.read(agent_stream_id(episode_id, agent))
        return history[-1].at if history else self.clock.now()

    def _gave_up(self, journal: Journal, agent: str, reason: str) -> EpisodeReport:
        if self.topology.root.restarts.escalate:
            return self._escalate(journal, agent, reason)
        return self._fail(journal, agent, reason)

    def _escalate(self, journal: Journal, agent: str, reason: str) -> EpisodeReport:
        """Ask a person what to do, with every agent's partial result; the episode waits."""
        episode_id = journal.stream_id
        escalation_id = self.ids.new()
        request = self.escalations.request(
            escalation_id,
            episode_id=episode_id,
            agent=agent,
            reason=reason,
            partial=partial_results(self.store, episode_id, list(self.topology.agents())),
            subject=journal.subject,
        )
        journal.record(EpisodeEscalated, agent=agent, escalation_id=escalation_id, reason=reason)
        journal.flush(request)
        return EpisodeReport(episode_id, "waiting", agent, reason, waiting=(str(escalation_id),))

    def _decided(
        self, journal: Journal, escalated: EpisodeEscalated, episode_input: dict[str, Any]
    ) -> EpisodeReport:
        """Carry out a person's answer to an escalation (or keep waiting for it)."""
        episode_id = journal.stream_id
        item = self.escalations.get(escalated.escalation_id)
        d = item.decision
        if d is None:
            waiting = (str(item.id),)
            return EpisodeReport(
                episode_id, "waiting", escalated.agent, item.request.reason, waiting
            )
        agent = escalated.agent
        if d.option == "abort":
            return self._fail(
                journal, agent, f"aborted by {d.approver}: {d.reason or 'no reason given'}"
            )
        if d.option == "accept":
            output = json.dumps(item.request.partial, sort_keys=True, default=str)
            journal.record(
                EpisodeCompleted,
                agent=agent,
                output=f"partial result accepted by {d.approver}: {output}",
            )
            journal.flush()
            return EpisodeReport(episode_id, "completed", agent, output)
        journal.record(EpisodeResumed, agent=agent)
        journal.record(
            BudgetGranted,
            agent=agent,
            steps=d.steps,
            tokens=d.tokens,
            cost=d.cost,
            seconds=d.seconds,
            by=d.approver,
        )
        journal.record(
            AgentRestarted,
            agent=agent,
            failed=agent,
            reason=f"retry by {d.approver}: {d.reason or 'no reason given'}",
            restart=0,
            strategy=self.topology.root.restarts.strategy,
            supervisor=self.topology.root.name,
        )
        journal.flush()
        last = last_task(self.store, episode_id, agent)
        if last is None:  # it never got a task: start the work over
            entry = self.topology.entry
            return self._drive(journal, entry, episode_input, "operator", episode_input)
        return self._drive(journal, agent, last.task, last.by, episode_input)

    def _fail(self, journal: Journal, agent: str, reason: str) -> EpisodeReport:
        journal.record(EpisodeFailed, agent=agent, reason=reason)
        journal.flush()
        return EpisodeReport(journal.stream_id, "failed", agent, reason)
