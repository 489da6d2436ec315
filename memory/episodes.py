"""Episodic memory: fold an episode's streams back into a timeline, and list episodes.

The timeline is what ``tether replay`` prints and what the demo's summary counts: per
agent, each action with every gate stage's decision and reason, the budget, the effects.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from tether.memory.errors import ConfigError, EpisodeErased, EpisodeNotFound

from ._codec import bulk
from ._keys import erased
from ._redaction import without_redacted
from .events import (
    ActionExecuted,
    ActionProposed,
    ActionRecorded,
    AgentDelegated,
    AgentFailed,
    AgentFinished,
    AgentHandedOff,
    AgentRestarted,
    AgentWaiting,
    ApprovalAwaited,
    ApprovalSettled,
    BudgetSettled,
    EffectApplied,
    EffectUncertain,
    EpisodeCancelled,
    EpisodeCompleted,
    EpisodeEscalated,
    EpisodeFailed,
    EpisodeForgotten,
    EpisodeForked,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeSuspended,
    Event,
    ExecutionStarted,
    ModelResponded,
    StageEvent,
    TaskAssigned,
    WorkAnswered,
    agent_stream_id,
    effect_stream_id,
    stage_events,
)
from .store import Store


@dataclass(slots=True)
class StageRow:
    """One gate stage's outcome."""

    stage: str
    decision: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    """Its event's other fields."""
    kind: str = "StageEvent"
    """Its event's class, which says how the row reads (``StageEvent.describe``)."""

    @property
    def note(self) -> str:
        """Its extra column, as its event's class words it ("": none)."""
        return _kind(self.kind).describe(self.detail)

    @property
    def tone(self) -> str:
        """``refused``, ``waiting`` or ``ok``, as its event's class reads its decision."""
        return _kind(self.kind).tone(self.decision)


def _kind(name: str) -> type[StageEvent]:
    """A stage event class by name (the base for a name no class has any more)."""
    found = _KINDS.get(name)
    if found is None:
        _KINDS.update(stage_events())
        found = _KINDS.setdefault(name, StageEvent)
    return found


_KINDS: dict[str, type[StageEvent]] = {}


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
    """What it waits for: an approval request, or (``waits_for == "person"``) the
    escalation about a side effect a crash left uncertain."""
    waits_for: str = "approval"
    """``approval`` (a person approves or denies it) or ``person`` (a person finds out
    whether its side effect happened: ``tether inbox resolve``)."""
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
    restarts: int = 0
    """Times its supervisor restarted it."""
    cost: str = "0"
    """Dollars its model turns cost, as recorded (a decimal string)."""
    started: str | None = None
    """When it was first given a task (ISO 8601): its time to live counts from there."""


@dataclass
class Timeline:
    """An episode, folded."""

    episode_id: uuid.UUID
    topology: str
    status: str
    started_at: str
    agents: list[AgentRow]
    effects: list[EffectApplied]
    output: str = ""

    def count(self, outcome: str) -> int:
        """Actions that ended (or stand) at ``outcome``."""
        return sum(1 for a in self.agents for act in a.actions if act.outcome == outcome)

    def headline(self) -> str:
        """The episode's status as a person should first read it: a completed episode
        some of whose actions failed says so, with the first failure's reason."""
        failed = [act for a in self.agents for act in a.actions if act.outcome == "failed"]
        if self.status != "completed" or not failed:
            return self.status
        n = len(failed)
        return f"completed, {n} action{'s' if n != 1 else ''} failed ({failed[0].reason})"


def episode_status(
    events: list[Event], status: str = "running", detail: str = ""
) -> tuple[str, str]:
    """(status, detail) of an episode from (more of) its own stream."""
    for e in events:
        if isinstance(e, EpisodeCompleted):
            status, detail = "completed", e.output
        elif isinstance(e, EpisodeFailed):
            status, detail = "failed", e.reason
        elif isinstance(e, EpisodeSuspended):
            n = len(e.waiting)
            status, detail = "waiting", f"{e.agent} waits for {n} approval{'s' * (n != 1)}"
        elif isinstance(e, EpisodeEscalated):
            status, detail = "waiting", f"escalated to a person: {e.reason}"
        elif isinstance(e, EpisodeResumed):
            status, detail = "running", ""
        elif isinstance(e, EpisodeCancelled):
            status, detail = "cancelled", f"by {e.by}: {e.reason}"
        elif isinstance(e, EpisodeForgotten):
            status, detail = "forgotten", f"{e.why}: {e.rule}"
    return status, detail


SNAPSHOT_EVERY = 1_000
"""Loading a timeline that folds at least this many events writes a snapshot of it."""

SNAPSHOT_FORM = 2
"""The form of a timeline snapshot; one of another form is not read (the fold starts
over and leaves a new one). 2: each stage row names its event's class."""

_NOT_DETAIL = (
    "originator_id",
    "originator_version",
    "at",
    "action",
    "stage",
    "decision",
    "reason",
)
_DETAIL: dict[type[Any], list[str]] = {}
"""Per stage event class: the fields its timeline row shows as detail."""


class TimelineFold:
    """The fold of an episode's streams into its timeline, resumable from a snapshot."""

    def __init__(self, started: EpisodeStarted) -> None:
        self.episode_id = started.originator_id
        self.topology = started.topology
        self.started_at = started.at.isoformat()
        self.status, self.output = "running", ""
        self.agents = {name: AgentRow(name) for name in started.agents}
        self.by_stream = {agent_stream_id(self.episode_id, name): name for name in started.agents}
        self.rows: dict[tuple[str, int], ActionRow] = {}
        self.effect_keys: list[str] = []
        self.position = 0
        """The notification id of the last event folded."""

    def apply(self, events: list[tuple[int, Event]]) -> int:
        """Fold events (of the episode's own stream or its agents'), in recorded order;
        return how many."""
        by_stream, agents, folds = self.by_stream, self.agents, _FOLDS
        stream, name = None, None
        for _, e in events:
            if e.originator_id is not stream:  # the common case, and UUID hashing is not cheap
                stream = e.originator_id
                name = by_stream.get(stream)
            if name is None:
                if isinstance(e, AgentRestarted) and e.agent in agents:
                    agents[e.agent].restarts += 1
                self.status, self.output = episode_status([e], self.status, self.output)
                continue
            cls = type(e)
            fold = folds.get(cls)
            if fold is None:  # a class seen first: fold it as its nearest listed base
                fold = folds[cls] = next((folds[b] for b in cls.__mro__ if b in folds), _skip)
            fold(self, agents[name], name, e)
        if events:
            self.position = events[-1][0]
        return len(events)

    def timeline(self, effects: list[EffectApplied]) -> Timeline:
        return Timeline(
            self.episode_id,
            self.topology,
            self.status,
            self.started_at,
            list(self.agents.values()),
            effects,
            self.output,
        )

    # --- snapshots --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything the fold knows, as plain data (the store's transcoder encodes it).

        Actions and stages are lists, not objects with named fields: a snapshot of a long
        episode holds one per event, and loading it should cost less than the fold.
        """
        return {
            "form": SNAPSHOT_FORM,
            "episode_id": self.episode_id.hex,
            "topology": self.topology,
            "started_at": self.started_at,
            "status": self.status,
            "output": self.output,
            "position": self.position,
            "effect_keys": self.effect_keys,
            "streams": {str(k): v for k, v in self.by_stream.items()},
            "agents": [
                {
                    **{k: v for k, v in a.__dict__.items() if k != "actions"},
                    "actions": [
                        [
                            r.action,
                            r.tool,
                            r.arguments,
                            [[s.stage, s.decision, s.reason, s.detail, s.kind] for s in r.stages],
                            r.outcome,
                            r.effect_key,
                            r.approval_id,
                            r.reason,
                            r.waits_for,
                        ]
                        for r in a.actions
                    ],
                }
                for a in self.agents.values()
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TimelineFold:
        fold = cls.__new__(cls)
        fold.episode_id = uuid.UUID(state["episode_id"])
        fold.topology, fold.started_at = state["topology"], state["started_at"]
        fold.status, fold.output = state["status"], state["output"]
        fold.position, fold.effect_keys = state["position"], state["effect_keys"]
        fold.by_stream = {uuid.UUID(k): v for k, v in state["streams"].items()}
        fold.agents, fold.rows = {}, {}
        for a in state["agents"]:
            name, actions = a["name"], []
            for action, tool, arguments, stages, outcome, key, approval, reason, *more in a[
                "actions"
            ]:
                row = ActionRow(name, action, tool, arguments, [StageRow(*s) for s in stages])
                row.waits_for = more[0] if more else "approval"  # (older snapshots: approvals)
                row.outcome, row.effect_key, row.approval_id, row.reason = (
                    outcome,
                    key,
                    approval,
                    reason,
                )
                actions.append(row)
                fold.rows[(name, action)] = row
            fold.agents[name] = AgentRow(**{**a, "actions": actions})
        return fold


def _assigned(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.assigned_by.append(e.by)
    agent.status = "working"
    agent.started = agent.started or e.at.isoformat()


def _responded(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.turns += 1
    agent.tokens += sum(e.usage.values())
    if e.cost is not None:
        agent.cost = str(Decimal(agent.cost) + Decimal(e.cost))


def _proposed(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = ActionRow(name, e.action, e.tool, e.arguments)
    fold.rows[(name, e.action)] = row
    agent.actions.append(row)


def _stage(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> ActionRow:
    row = fold.rows[(name, e.action)]
    cls = type(e)
    keys = _DETAIL.get(cls)
    if keys is None:
        keys = _DETAIL[cls] = [f.name for f in fields(cls) if f.name not in _NOT_DETAIL]
    state = e.__dict__
    row.stages.append(
        StageRow(e.stage, e.decision, e.reason, {k: state[k] for k in keys}, cls.__name__)
    )
    return row


def _awaited(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    row.outcome, row.approval_id = "waiting", str(e.approval_id)


def _uncertain(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    row.outcome, row.approval_id, row.waits_for = "waiting", str(e.escalation_id), "person"


def _attempt(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    if row.outcome == "waiting":  # a person answered: it runs again
        row.outcome = "open"


def _settled(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    if e.approval_id is not None:
        row.outcome = "open"


def _executed(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    row.effect_key = e.effect_key
    if e.effect_key:
        fold.effect_keys.append(e.effect_key)


def _budget_settled(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    _stage(fold, agent, name, e)
    agent.steps_used += e.used  # the budget's own count: a step is used once a tool ran


def _recorded(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    row = _stage(fold, agent, name, e)
    row.outcome, row.reason = e.decision, e.observation


def _finished(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.status, agent.detail = "finished", e.output


def _handed_off(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.status, agent.detail = "handed off", f"to {e.to}: {e.reason}"


def _delegated(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    workers = sorted({str(c.get("to")) for c in e.calls if isinstance(c, dict)})
    agent.status = "delegating"
    n = len(e.calls)
    agent.detail = f"waits for {n} answer{'s' * (n != 1)} from {', '.join(workers)}"


def _answered(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    n = len(e.answers)
    agent.status, agent.detail = "working", f"{n} answer{'s' * (n != 1)} back"


def _waiting(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.status, agent.detail = "waiting", ", ".join(e.approvals)


def _failed(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    agent.status, agent.detail = "failed", e.reason


def _skip(fold: TimelineFold, agent: AgentRow, name: str, e: Any) -> None:
    pass


_FOLDS: dict[type[Any], Callable[[TimelineFold, AgentRow, str, Any], Any]] = {
    TaskAssigned: _assigned,
    ModelResponded: _responded,
    ActionProposed: _proposed,
    StageEvent: _stage,
    ApprovalAwaited: _awaited,
    ApprovalSettled: _settled,
    ExecutionStarted: _attempt,
    EffectUncertain: _uncertain,
    ActionExecuted: _executed,
    BudgetSettled: _budget_settled,
    ActionRecorded: _recorded,
    AgentFinished: _finished,
    AgentHandedOff: _handed_off,
    AgentDelegated: _delegated,
    WorkAnswered: _answered,
    AgentWaiting: _waiting,
    AgentFailed: _failed,
}
"""How each kind of agent event changes the timeline, by class (a dispatch, not a chain
of isinstance checks: a third of the fold's time went to those)."""


def load_timeline(store: Store, episode_id: uuid.UUID, *, snapshots: bool = True) -> Timeline:
    """Fold every stream of an episode into its timeline.

    With ``snapshots`` the fold starts from the latest snapshot and reads only the events
    after it, and a load that had to fold many events leaves a new snapshot behind.
    """
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    fold = TimelineFold(own[0])
    with bulk():  # the events are dropped inside, so the collector never scans them
        if snapshots:
            state = store.snapshots.latest(episode_id, "timeline")
            if state is not None and state.get("form") == SNAPSHOT_FORM:
                fold = TimelineFold.from_state(state)
        streams = [episode_id, *fold.by_stream]
        names = {episode_id: "episode", **fold.by_stream}
        folded = fold.apply(
            without_redacted(store.read_streams(streams, after=fold.position), names)
        )
    if snapshots and folded >= SNAPSHOT_EVERY:
        store.snapshots.save(episode_id, "timeline", fold.position, fold.to_state())
    effects = [
        e
        for _, e in store.read_streams([effect_stream_id(k) for k in fold.effect_keys])
        if isinstance(e, EffectApplied)
    ]
    return fold.timeline(effects)


def episode_events(store: Store, episode_id: uuid.UUID) -> list[tuple[int, Event]]:
    """Every event of an episode, in recorded order: its own stream, its agents', and the
    approval requests and effects they refer to."""
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    names = {agent_stream_id(episode_id, name): name for name in own[0].agents}
    events = without_redacted(
        store.read_streams([episode_id, *names]), {episode_id: "episode", **names}
    )
    related: list[uuid.UUID] = []
    for _, e in events:
        if isinstance(e, ApprovalAwaited):
            related.append(e.approval_id)
        elif isinstance(e, ActionExecuted) and e.effect_key:
            related.append(effect_stream_id(e.effect_key))
    return sorted([*events, *store.read_streams(related)], key=lambda pair: pair[0])


@dataclass(frozen=True)
class EpisodeSummary:
    """One line of ``tether episodes``."""

    episode_id: uuid.UUID
    topology: str
    started_at: str
    status: str
    detail: str


def list_episodes(store: Store, *, forgotten: bool = False) -> list[EpisodeSummary]:
    """Every episode, oldest first; those retention forgot only with ``forgotten``."""
    out = []
    for _, started in store.of_type(EpisodeStarted):
        status, detail = episode_status(store.read(started.originator_id))
        if status == "forgotten" and not forgotten:
            continue
        out.append(
            EpisodeSummary(
                started.originator_id, started.topology, started.at.isoformat(), status, detail
            )
        )
    return out


def runnable(started: EpisodeStarted) -> EpisodeStarted:
    """``started``, if its episode can run again; ``EpisodeErased`` if its subject's data
    (its input and context among them) was erased."""
    if started.subject and started.context == erased("dict", started.subject):
        raise EpisodeErased(str(started.originator_id), started.subject)
    return started


def fork_episode(
    store: Store, episode_id: uuid.UUID, steps: int, new_id: uuid.UUID, at: datetime
) -> uuid.UUID:
    """Start episode ``new_id`` as a copy of the first ``steps`` steps of ``episode_id``.

    A step is one model turn and the actions it asked for, counted across agents in the
    order they happened. The copy keeps every event of those steps (their decisions,
    results and spent budget: a fork never resets spending); an action that still waited
    for a person gets a request of its own in the fork. Effects are not repeated: the
    copied actions refer to the original's effects ledger. ``tether resume`` then
    continues the fork live.
    """
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    started = runnable(own[0])
    if steps < 0:
        raise ConfigError(f"--at {steps}: a step count cannot be negative")
    names = {agent_stream_id(episode_id, n): n for n in started.agents}
    events = store.read_streams(names)
    turns = [n for n, e in events if isinstance(e, ModelResponded)]
    if steps > len(turns):
        raise ConfigError(
            f"--at {steps}: episode {episode_id} has only {len(turns)} "
            f"step{'s' * (len(turns) != 1)}; "
            f"choose 0 to {len(turns)}"
        )
    cut = turns[steps] if steps < len(turns) else None
    shared = [e for n, e in events if cut is None or n < cut]
    settled = {e.approval_id for e in shared if isinstance(e, ApprovalSettled) and e.approval_id}
    renamed: dict[uuid.UUID, uuid.UUID] = {}
    copies: list[Event] = [
        _copy(started, originator_id=new_id),
        EpisodeForked(
            originator_id=new_id, originator_version=2, at=at, source=episode_id, steps=steps
        ),
    ]
    for e in shared:
        changes: dict[str, Any] = {"originator_id": agent_stream_id(new_id, names[e.originator_id])}
        if isinstance(e, TaskAssigned):
            changes["episode_id"] = new_id
        elif isinstance(e, ApprovalAwaited) and e.approval_id not in settled:
            # Still waiting when the fork was cut: the fork asks its own person.
            fresh = renamed.setdefault(e.approval_id, uuid.uuid5(new_id, str(e.approval_id)))
            changes["approval_id"] = fresh
            [request] = store.read(e.approval_id, limit=1)
            copies.append(_copy(request, originator_id=fresh, episode_id=new_id, at=at))
        elif isinstance(e, AgentWaiting):
            changes["approvals"] = [str(renamed.get(uuid.UUID(a), a)) for a in e.approvals]
        copies.append(_copy(e, **changes))
    # The copied decisions keep their records in the source's trail; the fork's record
    # names them, so that `tether audit verify` accounts for every decision event.
    mine = {agent_stream_id(new_id, n) for n in names.values()}
    copied = {str(c.originator_id): c.originator_version for c in copies if c.originator_id in mine}
    audit = {
        "kind": "fork",
        "at": at.isoformat(),
        "episode": str(new_id),
        "stage": "fork",
        "decision": "copied",
        "rules": [],
        "source": str(episode_id),
        "steps": steps,
        "copies": copied,
        "event": f"{new_id}/2",
    }
    store.append(copies, subject=started.subject, audit=[audit])
    return new_id


def _copy(event: Event, **changes: Any) -> Event:
    return dataclasses.replace(event, **changes)
