"""The fleet's state, from the store: what ``tether status`` shows.

Every number is folded from recorded events, so status is the same whether the fleet is
running, waiting for people, or stopped: per episode, its supervisor's steps, model
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
from tether.memory.events import EpisodeStarted
from tether.memory.store import Store
from tether.topologies.loader import load_source
from tether.topologies.spec import Budget, Topology

from .budget import NANO, Extra, active_seconds, granted, nanos, plus, total, waits


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
    extras, spans = granted(own), waits(own)
    # Time runs while the episode runs; a finished one stopped at its last event.
    until = own[-1].at if status in ("completed", "failed") else now
    key = json.dumps(started.source, sort_keys=True, default=str)
    loaded: Topologies = {} if topologies is None else topologies
    if key not in loaded:
        loaded[key] = _topology(started)
    found = loaded[key]
    topology = found if isinstance(found, Topology) else None
    timeline = load_timeline(store, episode_id)
    budgets: dict[str, Budget] = (
        {n: a.budget for n, a in topology.agents().items()} if topology is not None else {}
    )
    root = topology.root if topology is not None else None
    everything = total(extras)
    rows = {row.name: row for row in timeline.agents}
    # Each supervisor's time left: the root's from the episode's start, a nested one's
    # from the first task of an agent under it.
    sup_ttl: dict[str, float] = {}
    for sup in topology.supervisors().values() if topology is not None else []:
        if sup.budget.ttl_s is None:
            continue
        under = topology.under(sup.name) if topology is not None else frozenset()
        more_s = total(extras, under).seconds
        firsts = [
            datetime.fromisoformat(r.started) for a in under if (r := rows.get(a)) and r.started
        ]
        start = started.at if sup is root else min(firsts, default=until)
        sup_ttl[sup.name] = sup.budget.ttl_s + more_s - active_seconds(start, spans, until)
    episode_ttl = sup_ttl.get(root.name) if root is not None else None
    agents = []
    for row in timeline.agents:
        budget = budgets.get(row.name, Budget())
        more = extras.get(row.name, Extra())
        chain = topology.chain(row.name) if topology is not None else []
        above = [sup_ttl[s.name] for s in chain if s.name in sup_ttl]
        ttl = min(above) if above else None
        if budget.ttl_s is not None:
            start = datetime.fromisoformat(row.started) if row.started else until
            mine = budget.ttl_s + more.seconds - active_seconds(start, spans, until)
            ttl = mine if ttl is None else min(ttl, mine)
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
                steps=Usage(row.steps_used, plus(budget.steps, more.steps), held),
                tokens=Usage(row.tokens, plus(budget.tokens, more.tokens)),
                waiting=tuple(str(a.approval_id) for a in row.actions if a.outcome == "waiting"),
                restarts=row.restarts,
                cost=Usage(nanos(row.cost), plus(_nanos(budget.cost), more.cost)),
                ttl_left_s=ttl,
                supervisor=chain[0].name if chain else "",
            )
        )
    return EpisodeStatus(
        episode_id=episode_id,
        topology=started.topology,
        status=status,
        supervisor=root.name if root is not None else "root",
        steps=Usage(
            sum(a.steps.used for a in agents),
            plus(root.budget.steps, everything.steps) if root else None,
            sum(a.steps.reserved for a in agents),
        ),
        tokens=Usage(
            sum(a.tokens.used for a in agents),
            plus(root.budget.tokens, everything.tokens) if root else None,
        ),
        agents=tuple(agents),
        limits_known=topology is not None,
        cost=Usage(
            sum(a.cost.used for a in agents),
            plus(_nanos(root.budget.cost), everything.cost) if root else None,
        ),
        ttl_left_s=episode_ttl,
        supervisors=_supervisors(topology, tuple(agents), extras, sup_ttl, rows),
        note=None if isinstance(found, Topology) else _unloadable(started.source, found),
    )


def _supervisors(
    topology: Topology | None,
    agents: tuple[AgentStatus, ...],
    extras: dict[str, Extra],
    ttl: dict[str, float],
    rows: dict[str, Any],
) -> tuple[SupervisorStatus, ...]:
    """Each supervisor's usage: the sum over the agents under it, against its budget
    raised by what people granted those agents."""
    if topology is None:
        return ()
    out = []
    for sup in topology.supervisors().values():
        names = topology.under(sup.name)
        under = [a for a in agents if a.name in names]
        more = total(extras, names)
        chain = topology.chain(sup.name)
        out.append(
            SupervisorStatus(
                name=sup.name,
                parent=chain[0].name if chain else None,
                steps=Usage(
                    sum(a.steps.used for a in under),
                    plus(sup.budget.steps, more.steps),
                    sum(a.steps.reserved for a in under),
                ),
                tokens=Usage(
                    sum(a.tokens.used for a in under), plus(sup.budget.tokens, more.tokens)
                ),
                cost=Usage(
                    sum(a.cost.used for a in under), plus(_nanos(sup.budget.cost), more.cost)
                ),
                ttl_left_s=ttl.get(sup.name),
                spawns=Usage(
                    sum(1 for a in under if rows[a.name].started is not None), sup.budget.spawns
                ),
            )
        )
    return tuple(out)


def _nanos(dollars: Decimal | None) -> int | None:
    return None if dollars is None else nanos(dollars)


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
