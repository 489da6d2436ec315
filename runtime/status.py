"""The fleet's state, from the store: what ``tether status`` shows.

Every number is folded from recorded events, so status is the same whether the fleet is
running, waiting for people, or stopped: per episode, its supervisor's steps and model
tokens used against its budget; per agent, its state, what it used and has left, and the
approvals it waits for. Limits come from the topology, loaded again from where the episode
says it came from; a topology that cannot be loaded any more shows its limits as unknown.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from tether.memory.episodes import list_episodes, load_timeline
from tether.memory.events import EpisodeStarted
from tether.memory.store import Store
from tether.runtime.errors import TetherError
from tether.topologies.spec import Budget, Topology


@dataclass(frozen=True)
class Usage:
    """One budget unit: what was used, what open actions hold, and the limit (None = no
    limit, or unknown)."""

    used: int
    limit: int | None
    reserved: int = 0

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used - self.reserved


@dataclass(frozen=True)
class AgentStatus:
    name: str
    state: str
    """idle, working, waiting, handed off, finished or failed."""
    detail: str
    steps: Usage
    tokens: Usage
    waiting: tuple[str, ...]
    """Approval requests it waits for."""
    restarts: int = 0
    """Times its supervisor restarted it."""


@dataclass(frozen=True)
class EpisodeStatus:
    episode_id: uuid.UUID
    topology: str
    status: str
    supervisor: str
    steps: Usage
    tokens: Usage
    agents: tuple[AgentStatus, ...]
    limits_known: bool
    """False when the topology could not be loaded again: limits show as unknown."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["episode_id"] = str(self.episode_id)
        for unit in ("steps", "tokens"):
            out[unit]["left"] = getattr(self, unit).left
        for agent, row in zip(self.agents, out["agents"], strict=True):
            for unit in ("steps", "tokens"):
                row[unit]["left"] = getattr(agent, unit).left
        return out


Topologies = dict[str, Topology | None]
"""Topologies already loaded, by their source: ``--watch`` loads each file once."""


def fleet_status(
    store: Store, *, finished: bool = False, topologies: Topologies | None = None
) -> list[EpisodeStatus]:
    """Every episode still running or waiting (with ``finished``, every one)."""
    loaded: Topologies = {} if topologies is None else topologies
    out = []
    for summary in list_episodes(store):
        if not finished and summary.status not in ("running", "waiting"):
            continue
        out.append(episode_status(store, summary.episode_id, summary.status, loaded))
    return out


def episode_status(
    store: Store, episode_id: uuid.UUID, status: str, topologies: Topologies | None = None
) -> EpisodeStatus:
    started = store.read(episode_id, limit=1)[0]
    assert isinstance(started, EpisodeStarted)
    key = json.dumps(started.source, sort_keys=True, default=str)
    loaded: Topologies = {} if topologies is None else topologies
    if key not in loaded:
        loaded[key] = _topology(started)
    topology = loaded[key]
    timeline = load_timeline(store, episode_id)
    budgets: dict[str, Budget] = (
        {a.name: a.budget for a in topology.root.children} if topology is not None else {}
    )
    agents = []
    for row in timeline.agents:
        budget = budgets.get(row.name, Budget())
        held = sum(
            1
            for a in row.actions
            if ("budget", "reserved") in ((st.stage, st.decision) for st in a.stages)
            and not any(st.stage == "budget" and st.decision == "settled" for st in a.stages)
        )
        agents.append(
            AgentStatus(
                name=row.name,
                state=row.status,
                detail=row.detail,
                steps=Usage(row.steps_used, budget.steps, held),
                tokens=Usage(row.tokens, budget.tokens),
                waiting=tuple(str(a.approval_id) for a in row.actions if a.outcome == "waiting"),
                restarts=row.restarts,
            )
        )
    root = topology.root if topology is not None else None
    return EpisodeStatus(
        episode_id=episode_id,
        topology=started.topology,
        status=status,
        supervisor=root.name if root is not None else "root",
        steps=Usage(
            sum(a.steps.used for a in agents),
            root.budget.steps if root else None,
            sum(a.steps.reserved for a in agents),
        ),
        tokens=Usage(sum(a.tokens.used for a in agents), root.budget.tokens if root else None),
        agents=tuple(agents),
        limits_known=topology is not None,
    )


def _topology(started: EpisodeStarted) -> Topology | None:
    from tether.topologies.loader import load_source

    try:
        return load_source(started.source).topology
    except TetherError:
        return None
