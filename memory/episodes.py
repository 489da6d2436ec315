"""Episodic memory: fold an episode's streams back into a timeline, and list episodes.

The timeline is what ``tether replay`` prints and what the demo's summary counts: per
agent, each action with every gate stage's decision and reason, the budget, the effects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tether.runtime.errors import EpisodeNotFound

from .events import (
    ActionExecuted,
    ActionProposed,
    ActionRecorded,
    AgentFailed,
    AgentFinished,
    AgentHandedOff,
    AgentWaiting,
    ApprovalAwaited,
    ApprovalSettled,
    EffectApplied,
    EpisodeCompleted,
    EpisodeFailed,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeSuspended,
    Event,
    ModelResponded,
    StageEvent,
    TaskAssigned,
    agent_stream_id,
    effect_stream_id,
)
from .store import Store


@dataclass
class StageRow:
    """One gate stage's outcome."""

    stage: str
    decision: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionRow:
    """One action and its way through the gate."""

    agent: str
    action: int
    tool: str
    arguments: dict[str, Any]
    stages: list[StageRow] = field(default_factory=list)
    outcome: str = "open"
    """executed, denied, failed, waiting, or open (in flight)."""
    effect_key: str | None = None
    approval_id: str | None = None
    reason: str = ""
    """Why it ended as it did (for a denied or failed action, the deciding stage's words)."""


@dataclass
class AgentRow:
    """One agent's part in the episode."""

    name: str
    assigned_by: list[str] = field(default_factory=list)
    turns: int = 0
    tokens: int = 0
    actions: list[ActionRow] = field(default_factory=list)
    status: str = "idle"
    detail: str = ""
    steps_used: int = 0


@dataclass
class Timeline:
    """An episode, folded."""

    episode_id: uuid.UUID
    topology: str
    status: str
    started_at: str
    agents: list[AgentRow]
    effects: list[EffectApplied]
    events: list[tuple[int, Event]]
    output: str = ""

    def count(self, outcome: str) -> int:
        """Actions that ended (or stand) at ``outcome``."""
        return sum(1 for a in self.agents for act in a.actions if act.outcome == outcome)


def episode_status(events: list[Event]) -> tuple[str, str]:
    """(status, detail) of an episode from its own stream."""
    status, detail = "running", ""
    for e in events:
        if isinstance(e, EpisodeCompleted):
            status, detail = "completed", e.output
        elif isinstance(e, EpisodeFailed):
            status, detail = "failed", e.reason
        elif isinstance(e, EpisodeSuspended):
            status, detail = "waiting", f"{e.agent} waits for {len(e.waiting)} approval(s)"
        elif isinstance(e, EpisodeResumed):
            status, detail = "running", ""
    return status, detail


def load_timeline(store: Store, episode_id: uuid.UUID) -> Timeline:
    """Fold every stream of an episode into its timeline."""
    own = store.read(episode_id)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    started = own[0]
    status, output = episode_status(own)
    agents = {name: AgentRow(name) for name in started.agents}
    by_stream = {agent_stream_id(episode_id, name): name for name in started.agents}
    events = store.read_streams([episode_id, *by_stream])
    rows: dict[tuple[str, int], ActionRow] = {}
    effect_keys: list[str] = []
    for _, e in events:
        name = by_stream.get(e.originator_id)
        if name is None:
            continue
        agent = agents[name]
        if isinstance(e, TaskAssigned):
            agent.assigned_by.append(e.by)
            agent.status = "working"
        elif isinstance(e, ModelResponded):
            agent.turns += 1
            agent.tokens += sum(e.usage.values())
        elif isinstance(e, ActionProposed):
            row = ActionRow(name, e.action, e.tool, e.arguments)
            rows[(name, e.action)] = row
            agent.actions.append(row)
        elif isinstance(e, StageEvent):
            row = rows[(name, e.action)]
            detail = {
                k: v
                for k, v in vars(e).items()
                if k
                not in ("originator_id", "originator_version", "at", "action", "decision", "reason")
            }
            row.stages.append(StageRow(e.stage, e.decision, e.reason, detail))
            if isinstance(e, ApprovalAwaited):
                row.outcome, row.approval_id = "waiting", str(e.approval_id)
            elif isinstance(e, ApprovalSettled) and e.approval_id is not None:
                row.outcome = "open"
            elif isinstance(e, ActionExecuted):
                row.effect_key = e.effect_key
                if e.effect_key:
                    effect_keys.append(e.effect_key)
                if e.decision == "ok":
                    agent.steps_used += 1
            elif isinstance(e, ActionRecorded):
                row.outcome, row.reason = e.decision, e.observation
        elif isinstance(e, AgentFinished):
            agent.status, agent.detail = "finished", e.output
        elif isinstance(e, AgentHandedOff):
            agent.status, agent.detail = "handed off", f"to {e.to}: {e.reason}"
        elif isinstance(e, AgentWaiting):
            agent.status, agent.detail = "waiting", ", ".join(e.approvals)
        elif isinstance(e, AgentFailed):
            agent.status, agent.detail = "failed", e.reason
    effects = [
        e
        for _, e in store.read_streams([effect_stream_id(k) for k in effect_keys])
        if isinstance(e, EffectApplied)
    ]
    return Timeline(
        episode_id,
        started.topology,
        status,
        started.at.isoformat(),
        list(agents.values()),
        effects,
        events,
        output,
    )


@dataclass(frozen=True)
class EpisodeSummary:
    """One line of ``tether episodes``."""

    episode_id: uuid.UUID
    topology: str
    started_at: str
    status: str
    detail: str


def list_episodes(store: Store) -> list[EpisodeSummary]:
    """Every episode, oldest first."""
    out = []
    for _, started in store.of_type(EpisodeStarted):
        status, detail = episode_status(store.read(started.originator_id))
        out.append(
            EpisodeSummary(
                started.originator_id, started.topology, started.at.isoformat(), status, detail
            )
        )
    return out
