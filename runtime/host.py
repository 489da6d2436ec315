"""A host carries many agents of one fleet; each agent is rebuilt from its stream.

``Host`` is plain Python, testable without Ray. ``runtime.actor`` wraps it in a Ray
actor, a thin shell: the actor's constructor builds a ``Host`` and every method forwards.
A restarted actor therefore comes back with exactly the state its events describe.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tether.agents.loop import ActionResult, AgentLoop, AgentOutcome, Mailbox, Recall
from tether.agents.model import ToolCall
from tether.agents.secrets import Secrets
from tether.memory._redaction import redacted, redactions
from tether.memory.errors import BudgetExhausted, ConfigError, EpisodeNotFound, StoreError
from tether.memory.events import (
    ActionExecuted,
    ActionProposed,
    ActionRecorded,
    AgentFailed,
    EpisodeStarted,
    Event,
    MessageSent,
    TaskAssigned,
    agent_stream_id,
    mailbox_stream_id,
)
from tether.memory.org import OrgMemory
from tether.memory.sources import Clock, Ids
from tether.memory.store import Fencing, Journal, Store, flush_together, new_event
from tether.topologies.spec import Agent
from tether.topologies.topology import Topology

from .boundaries import Boundaries, fleet_spend
from .budget import BudgetFold, ModelBudget
from .delegate import Delegate
from .escalation import Escalations
from .gate import EpisodeRules, Gate, Services
from .governance import Governance
from .inbox import Inbox

_STARTING = "starting"
"""The key of the spawn a start check holds for a moment (and gives back)."""


@dataclass
class AgentRuntime:
    """One agent at work in one episode: its journal, gate and loop."""

    name: str
    journal: Journal
    gate: Gate
    loop: AgentLoop
    budget: BudgetFold
    """The episode's budgets, which its journal's events are folded into."""

    @property
    def started(self) -> datetime | None:
        """When it was first given a task: its time to live counts from there."""
        return self.budget.started.get(self.name)

    def assign(self, task: dict[str, Any], by: str, *, flush: bool = True) -> None:
        """Give the agent a task (the episode's input or a handoff); ``flush=False``
        leaves it held for the caller to flush with others."""
        self.journal.record(
            TaskAssigned,
            episode_id=self.gate.episode_id,
            agent=self.name,
            task=task,
            by=by,
            instructions=self.loop.conduct.instructions,
        )
        if flush:
            self.journal.flush()


class Host:
    """Agents of one topology, by (episode, agent), sharing one store."""

    def __init__(
        self,
        topology: Topology,
        store: Store,
        clock: Clock,
        ids: Ids,
        *,
        inbox: Inbox | None = None,
        delegate: Delegate | None = None,
        secrets: Secrets | None = None,
        sleep: Callable[[float], None] = time.sleep,
        carries: frozenset[str] | None = None,
        memory: Memory | None = None,
        mailboxes: Mailboxes | None = None,
        clocks: Callable[[uuid.UUID], Clock] | None = None,
        ids_for: Callable[[str], Ids] | None = None,
        escalations: Escalations | None = None,
    ) -> None:
        self.escalations = escalations
        """Where gates ask a person about a side effect a crash left uncertain (None: the
        store's escalations; re-execution reveals the recorded answers)."""
        self.clocks = clocks
        """The clock of each agent stream's journal; None: ``clock`` for all (re-execution
        gives each stream its recorded times, whatever order agents on several hosts
        recorded them in)."""
        self.ids_for = ids_for
        """The ids each agent's gate draws; None: ``ids`` for all (likewise)."""
        self.memory: Memory = memory or OrgRecall(store)
        """Where agents recall org-memory facts (re-execution feeds back the record)."""
        self.mailboxes = mailboxes
        """Where an agent reads its messages, given its journal; None: its mailbox stream
        (re-execution feeds back what each read took, outsiders' messages included)."""
        self.sleep = sleep
        """How retries wait between attempts (re-execution does not wait)."""
        self.topology = topology
        self.policy = topology.policy_hash()
        self.names = frozenset(topology.agents())
        """The fleet's agents (made once: every gate holds it)."""
        self.carries = self.names if carries is None else carries
        """The agents this host runs; the others run on other hosts, and what they spend
        is folded from the store before each run (``Outside``)."""
        self.outside: dict[uuid.UUID, Outside] = {}
        self.budgets: dict[uuid.UUID, BudgetFold] = {}
        """Per episode: what its agents and supervisors spent and may spend, folded from
        its own stream (grants, waits) and every agent's, this host's or not."""
        self.seen: dict[uuid.UUID, int] = {}
        """Per episode: the position in its own stream folded so far."""
        self.store = store
        self.clock = clock
        self.ids = ids
        self.inbox = inbox or Inbox(store, clock)
        self.delegate = delegate or Delegate(store, clock, facts=topology.facts, secrets=secrets)
        self.agents: dict[tuple[uuid.UUID, str], AgentRuntime] = {}
        self.contexts: dict[uuid.UUID, dict[str, Any]] = {}
        self.subjects: dict[uuid.UUID, str | None] = {}
        self.fleet_spent: dict[uuid.UUID, dict[tuple[str, str], Decimal]] = {}
        """Per episode: what all its agents spent, per (tool, argument), for fleet caps."""
        self.redactions: dict[uuid.UUID, dict[tuple[str, int], list[str]]] = {}
        """Redacted fields of each episode, read once with the episode's own stream."""
        self.fences: dict[uuid.UUID, Fencing] = {}
        """Per episode: the lease token its runner holds, carried by every append of its
        agents (None until a runner says: ``Host.start`` and ``send`` run no episode)."""

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None = None,
        by: str = "operator",
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        """Run an agent until it finishes, hands off, waits, delegates, fails, or its time
        to live runs out; assign ``task`` first, or first feed it ``answers`` to the work
        it delegated. ``fence``: the runner's lease token, which every append carries."""
        runtime = self.agent(episode_id, agent)
        if fence is not None:
            self.fences[episode_id].token = fence
        self._refresh(episode_id)
        if task is not None and runtime.started is None:
            denied = self._spawn_denied(episode_id, agent)
            if denied is not None:
                return AgentOutcome(agent, "failed", f"budget: {denied}")
        if task is not None:
            runtime.assign(task, by)
        if answers:
            runtime.loop.answer(answers)
        deadline = self.budgets[episode_id].deadline(agent)
        runtime.loop.deadline = runtime.gate.deadline = deadline
        try:
            return runtime.loop.run()
        except StoreError:
            raise  # the store failing is not the agent failing: nothing more can be recorded
        except Exception as e:
            # A bug in a tool's verifier, a model adapter, a script: the agent failed. What
            # it recorded so far is kept; the failure is recorded with the error.
            reason = f"crashed: {type(e).__name__}: {e}"
            runtime.journal.record(AgentFailed, reason=reason)
            runtime.journal.flush()
            return AgentOutcome(agent, "failed", reason)

    def start(
        self, episode_id: uuid.UUID, tasks: dict[str, dict[str, Any]], by: str = "operator"
    ) -> int:
        """Start many logical agents at once: each gets its task, all in one transaction,
        and is ready to run or to take messages. Returns how many were started."""
        runtimes = [self.agent(episode_id, name) for name in tasks]
        self._room_to_start([r for r in runtimes if r.started is None])
        for runtime, task in zip(runtimes, tasks.values(), strict=True):
            runtime.assign(task, by, flush=False)
        flush_together([r.journal for r in runtimes])
        return len(runtimes)

    def _room_to_start(self, new: list[AgentRuntime]) -> None:
        """Raise ``BudgetExhausted`` unless every supervisor above these agents may start
        them all (spawn budgets); nothing is held after the check."""
        held: list[AgentRuntime] = []
        try:
            for i, r in enumerate(new):
                short = r.budget.reserve(r.name, _STARTING, spawns=1)
                if short is not None:
                    ledger = short.ledger
                    raise BudgetExhausted(
                        f"spawn budget of supervisor {ledger.name} exhausted: {ledger.used} of "
                        f"{ledger.limit} agents started; {r.name} and {len(new) - i - 1} more "
                        "of this batch were not started (nothing was recorded)"
                    )
                held.append(r)
        finally:
            for r in held:
                r.budget.release(r.name, _STARTING)  # nothing stays held

    def _spawn_denied(
        self, episode_id: uuid.UUID, target: str, first: tuple[str, ...] = ()
    ) -> str | None:
        """Why handing work to ``target`` would start one agent too many, once the
        agents in ``first`` started (work given to them before starts first); None when
        it is started already, or may be."""
        budget = self.budgets[episode_id]
        if target not in self.names or target in budget.started:
            return None
        ahead = [
            n
            for n in dict.fromkeys(first)
            if n in self.names and n not in budget.started and n != target
        ]
        for n in ahead:
            budget.hold(n, _STARTING, spawns=1)
        try:
            short = budget.short(target, spawns=1)
        finally:
            for n in ahead:
                budget.release(n, _STARTING)
        if short is None:
            return None
        return (
            f"no spawn left on {short.ledger.name}'s budget (limit {short.ledger.limit}): "
            f"{target} cannot be started"
        )

    def _refresh(self, episode_id: uuid.UUID) -> None:
        """Fold what others recorded since this host last ran one of the episode's agents:
        the episode's own stream (grants, waits for people) and the agents on other
        hosts."""
        budget = self.budgets[episode_id]
        for e in self.store.read(episode_id, after=self.seen[episode_id]):
            budget.apply(e)
            self.seen[episode_id] = e.originator_version
        outside = self.outside.get(episode_id)
        if outside is not None:
            outside.refresh()

    def send(self, episode_id: uuid.UUID, to: str, body: str, sender: str = "operator") -> int:
        """Put a message in an agent's mailbox from outside the fleet (agents message
        each other with ``send_message``); it reads it before its next model call, as
        untrusted content. Returns the message's notification id: its place in the
        store's one order of all events (unique across streams, rising), not its place in
        the mailbox."""
        if to not in self.topology.agents():
            raise ConfigError(f"agent {to!r} is not in topology {self.topology.name!r}")
        self._load_episode(episode_id)
        message = new_event(
            MessageSent,
            mailbox_stream_id(episode_id, to),
            0,  # a placeholder: the store puts it at the end of the shared stream
            self.clock.now(),
            episode_id=episode_id,
            sender=sender,
            to=to,
            body=body,
        )
        [at] = self.store.append([], tail=[message], subject=self.subjects[episode_id])
        return at

    def _recall(self, episode_id: uuid.UUID, name: str, scopes: tuple[str, ...]) -> Recall:
        """The agent's org memory for a task: its scopes filled from the task, or from the
        episode input a handoff carries (a scope naming a field neither has is skipped),
        and the facts believed about them."""

        def recall(
            task: dict[str, Any], at: datetime | None
        ) -> tuple[list[str], list[dict[str, Any]]]:
            carried = task.get("input")  # a handoff carries the episode's input
            values = {**(carried if isinstance(carried, dict) else {}), **task}
            subjects = []
            for scope in scopes:
                try:
                    subjects.append(scope.format_map(values))
                except (KeyError, IndexError, ValueError, AttributeError):
                    continue
            when = at or self.clock.now()
            return subjects, self.memory(subjects, f"{name}@{episode_id}", when)

        return recall

    def _mailbox(self, stream: uuid.UUID) -> Mailbox:
        def read(after: int) -> list[tuple[int, str, str]]:
            return [
                (e.originator_version, e.sender, e.body)
                for e in self.store.read(stream, after=after)
                if isinstance(e, MessageSent)
            ]

        return read

    def act(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ActionResult:
        """Pass one tool call through the gate, outside the model loop (ops and benchmarks)."""
        return self.agent(episode_id, agent).gate.submit(call)

    def agent(self, episode_id: uuid.UUID, name: str) -> AgentRuntime:
        """The agent's runtime, rebuilt from its stream the first time it is asked for."""
        self._load_episode(episode_id)
        try:
            return self.agents[(episode_id, name)]
        except KeyError:
            if name in self.names:
                raise ConfigError(
                    f"agent {name!r} runs on another host than this one "
                    f"(it carries {len(self.carries)} of {len(self.names)} agents)"
                ) from None
            raise ConfigError(f"agent {name!r} is not in topology {self.topology.name!r}") from None

    def _load_episode(self, episode_id: uuid.UUID) -> None:
        if episode_id in self.contexts:
            return
        events = self.store.read(episode_id)
        if not events or not isinstance(events[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        self.contexts[episode_id] = events[0].context
        self.subjects[episode_id] = events[0].subject
        self.fences[episode_id] = Fencing(episode_id)
        self.redactions[episode_id] = redactions(events)
        # What people granted on escalations raises the agent's limits and those of every
        # supervisor above it; the waits for a person move deadlines.
        budget = self.budgets[episode_id] = BudgetFold.of(self.topology, episode_id)
        budget.apply_all(events)
        self.seen[episode_id] = events[-1].originator_version
        self.fleet_spent[episode_id] = {}  # every agent's spend, folded as they are rebuilt
        # The supervisors' ledgers are shared: fold every agent's history into them now.
        # All the streams are read in one query; a fleet may have thousands of agents.
        streams = {
            agent_stream_id(episode_id, name): name
            for name in self.topology.agents()
            if name in self.carries
        }
        histories: dict[str, list[Event]] = {name: [] for name in streams.values()}
        for _, e in self.store.read_streams(streams):
            histories[streams[e.originator_id]].append(e)
        for stream, name in streams.items():
            history = self._redacted(episode_id, name, histories.pop(name))
            self.agents[(episode_id, name)] = self._rebuild(episode_id, name, stream, history)
        if self.carries != self.names:
            others = {n: a for n, a in self.topology.agents().items() if n not in self.carries}
            outside = Outside(self.store, episode_id, others, budget, self.fleet_spent[episode_id])
            outside.refresh()
            self.outside[episode_id] = outside

    def history(self, episode_id: uuid.UUID, name: str) -> list[Event]:
        """The agent's stream as a rebuilt agent reads it (redactions applied)."""
        self._load_episode(episode_id)
        events = self.store.read(agent_stream_id(episode_id, name))
        return self._redacted(episode_id, name, events)

    def _redacted(self, episode_id: uuid.UUID, name: str, events: list[Event]) -> list[Event]:
        """The agent's events, with fields redacted since they were written shown
        redacted: an agent rebuilt after a redaction no longer remembers what was taken."""
        marks = self.redactions[episode_id]
        if not marks:
            return events
        return [
            redacted(e, fields) if (fields := marks.get((name, e.originator_version))) else e
            for e in events
        ]

    def _rules(self, episode_id: uuid.UUID) -> EpisodeRules:
        """What every gate of the episode shares."""
        return EpisodeRules(
            episode_id,
            self.contexts[episode_id],
            self.policy,
            self.topology.untrusted_input,
            self.topology.approvals,
            self.names,
            self.topology.stages,
        )

    def _rebuild(
        self, episode_id: uuid.UUID, name: str, stream: uuid.UUID, history: list[Event]
    ) -> AgentRuntime:
        spec = self.topology.agents()[name]
        context = self.contexts[episode_id]
        clock = self.clocks(stream) if self.clocks is not None else self.clock
        journal = Journal.after(self.store, stream, clock, history)
        journal.subject = self.subjects[episode_id]
        journal.fence = self.fences[episode_id]
        budget = self.budgets[episode_id]
        price = spec.price or getattr(spec.model, "price", None)  # the agent's, or its model's
        gate = Gate(
            agent=name,
            journal=journal,
            boundaries=Boundaries(spec, context, self.fleet_spent[episode_id]),
            governance=Governance(spec, self.topology.policy),
            budget=budget,
            episode=self._rules(episode_id),
            services=Services(
                self.inbox,
                self.delegate,
                self.ids_for(name) if self.ids_for is not None else self.ids,
                self.escalations,
            ),
            spawn_check=lambda target, first: self._spawn_denied(episode_id, target, first),
        )
        loop = AgentLoop(
            name,
            spec.model,
            tuple(t.spec() for t in spec.all_tools().values()),
            gate,
            journal,
            conduct=spec.conduct(),
            tokens=ModelBudget(budget, name, price),
            price=price,
            mailbox=self.mailboxes(episode_id, name, journal)
            if self.mailboxes is not None
            else self._mailbox(mailbox_stream_id(episode_id, name)),
            recall=self._recall(episode_id, name, spec.memory) if spec.memory else None,
            sleep=self.sleep,
        )
        for event in history:
            gate.observe(event)
            loop.observe(event)
            budget.apply(event)
        journal.observers += [gate.observe, loop.observe, budget.apply]
        journal.auditor = gate.audit
        return AgentRuntime(name, journal, gate, loop, budget)


Memory = Callable[[list[str], str, datetime], list[dict[str, Any]]]
"""Recalls the facts believed about some subjects, for someone, at a recorded time."""

Mailboxes = Callable[[uuid.UUID, str, Journal], Mailbox]
"""An agent's mailbox in an episode, given the journal of its stream."""


class OrgRecall:
    """Facts from the store's org memory; each recall is recorded as use (``FactUsed``),
    which keeps the facts alive under retention."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._org: OrgMemory | None = None

    def __call__(self, subjects: list[str], by: str, at: datetime) -> list[dict[str, Any]]:
        if self._org is None:
            self._org = OrgMemory(self.store)
        return [
            {
                "id": f.id,
                "subject": f.subject,
                "key": f.key,
                "statement": f.statement,
                "source": f.source_event,
            }
            for subject in subjects
            for f in self._org.recall(subject, by=by, at=at)
        ]


class Outside:
    """What the agents on other hosts of an episode spent: their budgets (into the
    episode's fold) and their calls on the fleet's spend caps. Folded from their streams,
    each refresh reading only what was recorded since the last."""

    def __init__(
        self,
        store: Store,
        episode_id: uuid.UUID,
        others: dict[str, Agent],
        budget: BudgetFold,
        fleet: dict[tuple[str, str], Decimal],
    ) -> None:
        self.store = store
        self.streams = {agent_stream_id(episode_id, name): name for name in others}
        self.rails = {name: others[name].rails for name in others}
        self.budget = budget
        self.fleet = fleet
        self.after = 0
        """The last notification folded."""
        self.proposed: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    def refresh(self) -> None:
        """Fold what the other agents recorded since the last refresh."""
        for n, e in self.store.read_streams(self.streams, after=self.after):
            self.after = n
            name = self.streams[e.originator_id]
            self.budget.apply(e)
            if isinstance(e, ActionProposed):
                self.proposed[(name, e.action)] = (e.tool, e.arguments)
            elif isinstance(e, ActionExecuted) and e.decision == "ok":
                tool, arguments = self.proposed.get((name, e.action), ("", {}))
                rails = [r for r in self.rails[name] if getattr(r, "tool", None) == tool]
                for key, amount in fleet_spend(rails, arguments).items():
                    self.fleet[key] = self.fleet.get(key, Decimal(0)) + amount
            elif isinstance(e, ActionRecorded):
                self.proposed.pop((name, e.action), None)
