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
from decimal import Decimal
from typing import Any

from tether.agents.loop import ActionResult, AgentLoop, AgentOutcome
from tether.agents.model import ToolCall
from tether.memory.events import (
    AgentFailed,
    BudgetGranted,
    EpisodeStarted,
    Event,
    TaskAssigned,
    agent_stream_id,
)
from tether.memory.forgetting import redacted, redactions
from tether.memory.sources import Clock, Ids
from tether.memory.store import Journal, Store
from tether.runtime.errors import ConfigError, EpisodeNotFound, StoreError
from tether.topologies.spec import Topology

from .boundaries import Boundaries
from .budget import Ledger, TokenMeter
from .delegate import Delegate
from .gate import Gate
from .governance import Governance
from .inbox import Inbox
from .secrets import Secrets


@dataclass
class AgentRuntime:
    """One agent at work in one episode: its journal, gate and loop."""

    name: str
    journal: Journal
    gate: Gate
    loop: AgentLoop

    def assign(self, task: dict[str, Any], by: str) -> None:
        """Give the agent a task (the episode's input or a handoff)."""
        self.journal.record(
            TaskAssigned,
            episode_id=self.gate.episode_id,
            agent=self.name,
            task=task,
            by=by,
            instructions=self.loop.instructions,
        )
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
    ) -> None:
        self.sleep = sleep
        """How retries wait between attempts (re-execution does not wait)."""
        self.topology = topology
        self.policy = topology.policy_hash()
        self.store = store
        self.clock = clock
        self.ids = ids
        self.inbox = inbox or Inbox(store, clock)
        self.delegate = delegate or Delegate(store, clock, facts=topology.facts, secrets=secrets)
        self.agents: dict[tuple[uuid.UUID, str], AgentRuntime] = {}
        self.supervisors: dict[uuid.UUID, Ledger] = {}
        """Per episode: the root supervisor's steps, shared by its agents' ledgers."""
        self.supervisor_tokens: dict[uuid.UUID, Ledger] = {}
        """Per episode: the root supervisor's model tokens, shared likewise."""
        self.granted: dict[uuid.UUID, dict[str, tuple[int, int]]] = {}
        """Per episode and agent: steps and tokens people granted on escalations."""
        self.contexts: dict[uuid.UUID, dict[str, Any]] = {}
        self.subjects: dict[uuid.UUID, str | None] = {}
        self.fleet_spent: dict[uuid.UUID, dict[tuple[str, str], Decimal]] = {}
        """Per episode: what all its agents spent, per (tool, argument), for fleet caps."""
        self.redactions: dict[uuid.UUID, dict[tuple[str, int], list[str]]] = {}
        """Redacted fields of each episode, read once with the episode's own stream."""

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None = None,
        by: str = "operator",
    ) -> AgentOutcome:
        """Run an agent until it finishes, hands off, waits or fails; assign ``task`` first."""
        runtime = self.agent(episode_id, agent)
        if task is not None:
            runtime.assign(task, by)
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

    def act(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ActionResult:
        """Pass one tool call through the gate, outside the model loop (ops and benchmarks)."""
        return self.agent(episode_id, agent).gate.submit(call)

    def agent(self, episode_id: uuid.UUID, name: str) -> AgentRuntime:
        """The agent's runtime, rebuilt from its stream the first time it is asked for."""
        self._load_episode(episode_id)
        try:
            return self.agents[(episode_id, name)]
        except KeyError:
            raise ConfigError(f"agent {name!r} is not in topology {self.topology.name!r}") from None

    def _load_episode(self, episode_id: uuid.UUID) -> None:
        if episode_id in self.contexts:
            return
        events = self.store.read(episode_id)
        if not events or not isinstance(events[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        self.contexts[episode_id] = events[0].context
        self.subjects[episode_id] = events[0].subject
        self.redactions[episode_id] = redactions(events)
        root = self.topology.root
        # What people granted on escalations raises the agent's and the supervisor's limits.
        granted = self.granted[episode_id] = {}
        for e in events:
            if isinstance(e, BudgetGranted):
                steps, tokens = granted.get(e.agent, (0, 0))
                granted[e.agent] = (steps + e.steps, tokens + e.tokens)
        all_steps = sum(g[0] for g in granted.values())
        all_tokens = sum(g[1] for g in granted.values())
        self.supervisors[episode_id] = Ledger(root.name, _plus(root.budget.steps, all_steps))
        self.supervisor_tokens[episode_id] = Ledger(
            root.name, _plus(root.budget.tokens, all_tokens)
        )
        self.fleet_spent[episode_id] = {}  # every agent's spend, folded as they are rebuilt
        # The supervisor's ledger is shared: fold every agent's history into it now.
        for name in self.topology.agents():
            self.agents[(episode_id, name)] = self._rebuild(episode_id, name)

    def _history(self, episode_id: uuid.UUID, name: str, stream: uuid.UUID) -> list[Event]:
        """The agent's stream, with fields redacted since it was written shown redacted:
        an agent rebuilt after a redaction no longer remembers what was taken away."""
        self._load_episode(episode_id)  # reads the episode's redactions once
        marks = self.redactions[episode_id]
        return [
            redacted(e, fields) if (fields := marks.get((name, e.originator_version))) else e
            for e in self.store.read(stream)
        ]

    def _rebuild(self, episode_id: uuid.UUID, name: str) -> AgentRuntime:
        spec = self.topology.agents()[name]
        context = self.contexts[episode_id]
        stream = agent_stream_id(episode_id, name)
        history = self._history(episode_id, name, stream)
        journal = Journal.after(self.store, stream, self.clock, history)
        journal.subject = self.subjects[episode_id]
        more_steps, more_tokens = self.granted[episode_id].get(name, (0, 0))
        ledger = Ledger(
            name, _plus(spec.budget.steps, more_steps), parent=self.supervisors[episode_id]
        )
        tokens = TokenMeter(
            Ledger(
                name,
                _plus(spec.budget.tokens, more_tokens),
                parent=self.supervisor_tokens[episode_id],
            )
        )
        gate = Gate(
            agent=name,
            episode_id=episode_id,
            journal=journal,
            boundaries=Boundaries(spec, context, self.fleet_spent[episode_id]),
            ledger=ledger,
            governance=Governance(spec, self.topology.policy),
            inbox=self.inbox,
            delegate=self.delegate,
            ids=self.ids,
            context=context,
            policy=self.policy,
            untrusted_input=self.topology.untrusted_input,
            approvals=self.topology.approvals,
        )
        tools = tuple(t.spec() for t in spec.all_tools().values())
        loop = AgentLoop(
            name,
            spec.model,
            tools,
            gate,
            journal,
            instructions=spec.instructions,
            max_turns=spec.max_turns,
            context_tokens=spec.context_tokens,
            stuck_repeats=spec.stuck.repeats,
            stuck_without_progress=spec.stuck.no_progress_steps,
            tokens=tokens,
            model_attempts=spec.retries.attempts,
            backoff_s=spec.retries.backoff_s,
            max_backoff_s=spec.retries.max_backoff_s,
            sleep=self.sleep,
        )
        for event in history:
            gate.observe(event)
            loop.observe(event)
            tokens.observe(event)
        journal.observers += [gate.observe, loop.observe, tokens.observe]
        journal.auditor = gate.audit
        return AgentRuntime(name, journal, gate, loop)


def _plus(limit: int | None, extra: int) -> int | None:
    """A limit raised by ``extra``; no limit stays no limit."""
    return None if limit is None else limit + extra
