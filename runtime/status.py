"""The fleet's state, from the store: what ``tether status`` shows.

Every number is folded from recorded events (budgets by the fold the hosts use,
``BudgetFold``), so status is the same whether the fleet is running, waiting for people,
or stopped: per episode, its supervisor's steps, model
tokens and cost used against its budget (with what people granted) and the time to live
it has left; per agent, its state, what it used and has left, and the approvals it waits
for. Limits come from the topology, loaded again from where the episode
says it came from; a topology that cannot be loaded any more shows its limits as unknown,
and a note names the file and the error.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tether.memory.episodes import list_episodes, load_timeline
from tether.memory.errors import TetherError, TopologyLoadError
from tether.memory.events import EpisodeStarted, agent_stream_id
from tether.memory.store import Store
from tether.topologies.loader import load_source
from tether.topologies.topology import Topology

from .budget import NANO, BudgetFold, Limits, Unit


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
    cost: Usage = Usage(0, None)
    """Model spend, in nano-dollars."""
    ttl_left_s: float | None = None
    """Seconds of active time it has left (its own or its supervisors', the fewest);
    None = no time to live."""
    supervisor: str = ""
    """Its supervisor ("" when the topology could not be loaded again)."""


@dataclass(frozen=True)
class SupervisorStatus:
    """One supervisor of the tree: what the agents under it used against its budget."""

    name: str
    parent: str | None
    """Its supervisor (None: the root)."""
    steps: Usage
    tokens: Usage
    cost: Usage
    """In nano-dollars."""
    ttl_left_s: float | None = None
    """Seconds of active time it has left; None = no time to live of its own."""
    spawns: Usage = Usage(0, None)
    """Agents under it started, against its spawn budget."""


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
    cost: Usage = Usage(0, None)
    """Model spend of all its agents, in nano-dollars."""
    ttl_left_s: float | None = None
    """Seconds of active time the episode has left; None = no time to live."""
    supervisors: tuple[SupervisorStatus, ...] = ()
    """Every supervisor of the tree, the root first (empty when the topology could not
    be loaded again)."""
    note: str | None = None
    """Why it shows less than it could: the topology file (or module) that could not be
    loaded again, and the error (None when it loaded, or was built in Python)."""

    def as_dict(self) -> dict[str, Any]:
        """As JSON: every unit with what is left; cost in dollars (decimal strings)."""
        out = asdict(self)
        out["episode_id"] = str(self.episode_id)
        pairs: list[tuple[EpisodeStatus | AgentStatus | SupervisorStatus, dict[str, Any]]] = [
            (self, out),
            *zip(self.agents, out["agents"], strict=True),
            *zip(self.supervisors, out["supervisors"], strict=True),
        ]
        for status, row in pairs:
            for unit in ("steps", "tokens"):
                row[unit]["left"] = getattr(status, unit).left
            c = status.cost
            row["cost"] = {
                "used": _dollars(c.used),
                "limit": _dollars(c.limit),
                "reserved": _dollars(c.reserved),
                "left": _dollars(c.left),
            }
        return out


Topologies = dict[str, Topology | TetherError]
"""Topologies already loaded, by their source, or the error that kept one from loading:
``--watch`` loads each file once."""


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
    store: Store,
    episode_id: uuid.UUID,
    status: str,
    topologies: Topologies | None = None,
    now: datetime | None = None,
) -> EpisodeStatus:
    """One episode's status; time to live is counted up to ``now`` (default: the wall
    clock) while it runs or waits."""
    now = now or datetime.now(UTC)
    own = store.read(episode_id)
    started = own[0]
    assert isinstance(started, EpisodeStarted)
    # Time runs while the episode runs; a finished one stopped at its last event.
    until = own[-1].at if status in ("completed", "failed") else now
    key = json.dumps(started.source, sort_keys=True, default=str)
    loaded: Topologies = {} if topologies is None else topologies
    if key not in loaded:
        loaded[key] = _topology(started)
    found = loaded[key]
    topology = found if isinstance(found, Topology) else None
    timeline = load_timeline(store, episode_id)
    budget = _budget(store, started, topology)
    root = topology.root if topology is not None else None
    agents = []
    for row in timeline.agents:
        chain = topology.chain(row.name) if topology is not None else []
        times = [budget.time_left(n, until) for n in (row.name, *(s.name for s in chain))]
        known = [t for t in times if t is not None]
        agents.append(
            AgentStatus(
                name=row.name,
                state=row.status,
                detail=row.detail,
                steps=_usage(budget, row.name, "steps"),
                tokens=_usage(budget, row.name, "tokens"),
                waiting=tuple(str(a.approval_id) for a in row.actions if a.outcome == "waiting"),
                restarts=row.restarts,
                cost=_usage(budget, row.name, "cost"),
                ttl_left_s=min(known) if known else None,
                supervisor=chain[0].name if chain else "",
            )
        )
    if root is not None:
        steps, tokens = _usage(budget, root.name, "steps"), _usage(budget, root.name, "tokens")
        cost = _usage(budget, root.name, "cost")
    else:  # no tree: what the agents used, against no known limit
        steps = Usage(
            sum(a.steps.used for a in agents), None, sum(a.steps.reserved for a in agents)
        )
        tokens = Usage(sum(a.tokens.used for a in agents), None)
        cost = Usage(sum(a.cost.used for a in agents), None)
    return EpisodeStatus(
        episode_id=episode_id,
        topology=started.topology,
        status=status,
        supervisor=root.name if root is not None else "root",
        steps=steps,
        tokens=tokens,
        agents=tuple(agents),
        limits_known=topology is not None,
        cost=cost,
        ttl_left_s=budget.time_left(root.name, until) if root is not None else None,
        supervisors=_supervisors(topology, budget, until),
        note=None if isinstance(found, Topology) else _unloadable(started.source, found),
    )


def _budget(store: Store, started: EpisodeStarted, topology: Topology | None) -> BudgetFold:
    """The episode's budgets, folded from its streams (with no limits for agents the
    topology, if it could be loaded again, does not know)."""
    episode_id = started.originator_id
    budget = BudgetFold.of(topology, episode_id)
    for name in started.agents:
        if name not in budget.nodes:
            budget.add(name, Limits())
    streams = [episode_id, *(agent_stream_id(episode_id, name) for name in started.agents)]
    budget.apply_all(e for _, e in store.read_streams(streams))
    return budget


def _usage(budget: BudgetFold, name: str, unit: Unit) -> Usage:
    """One unit of an agent or a supervisor: what it used and holds, against its limit.
    (A model call's hold is not on record: only steps are held between events.)"""
    ledger = budget.ledger(name, unit)
    return Usage(ledger.used, ledger.limit, ledger.reserved)


def _supervisors(
    topology: Topology | None, budget: BudgetFold, until: datetime
) -> tuple[SupervisorStatus, ...]:
    """Each supervisor's usage: what the agents under it used, against its budget raised
    by what people granted those agents."""
    if topology is None:
        return ()
    out = []
    for sup in topology.supervisors().values():
        chain = topology.chain(sup.name)
        out.append(
            SupervisorStatus(
                name=sup.name,
                parent=chain[0].name if chain else None,
                steps=_usage(budget, sup.name, "steps"),
                tokens=_usage(budget, sup.name, "tokens"),
                cost=_usage(budget, sup.name, "cost"),
                ttl_left_s=budget.time_left(sup.name, until),
                spawns=_usage(budget, sup.name, "spawns"),
            )
        )
    return tuple(out)


def _dollars(amount: int | None) -> str | None:
    return None if amount is None else str(Decimal(amount) / NANO)


def _topology(started: EpisodeStarted) -> Topology | TetherError:
    try:
        return load_source(started.source).topology
    except TetherError as e:
        return e


def _unloadable(source: dict[str, Any], error: TetherError) -> str | None:
    """One line naming the topology file (or module) that no longer loads, and why; None
    for a topology built in Python, which has nothing to load."""
    kind = source.get("kind")
    if kind not in ("file", "module"):
        return None
    where = source["path"] if kind == "file" else source["module"]
    why = error.reason if isinstance(error, TopologyLoadError) else str(error)
    return (
        f"topology {kind} {where} could not be loaded again, so its limits and supervisors "
        f"are not shown: {why}"
    )
