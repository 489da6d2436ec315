"""Deterministic re-execution: run an episode's topology again on its recorded inputs.

Every nondeterministic input an agent consumed is in the store: model turns
(``ModelResponded``), tool results (``ActionExecuted``), approval decisions, org-memory
recalls, the messages each agent read (``MessagesRead``: an outsider's are in no
mailbox of the scratch store), the ids each drawer drew and the times each stream read.
Re-execution builds the same topology with those inputs fed back — a recorded model per
agent, a delegate that answers from the record, an inbox that reveals each decision when
the recorded run had it — runs it in process against a scratch store, with **zero** model
or tool calls, and compares what it records with what was recorded. Everything the
agents' own code decides (rails, grants, verifiers, the loop) is computed afresh, so
changing that code between run and re-execution is how to test a change against real
history.

The answer is ``identical``, or the first divergence in recorded order: the agent, the
position in its stream, the event and field, and the recorded and new values. Times are
fed back in order but not compared: they are inputs, not decisions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tether.agents.loop import Mailbox, recorded_calls
from tether.agents.model import ModelRequest, ModelTurn, Usage
from tether.agents.tools import Tool
from tether.memory.compare import RUNNERS, Divergence, first_divergence
from tether.memory.episodes import runnable
from tether.memory.errors import EpisodeNotFound, ModelError, TransientModelError
from tether.memory.events import (
    ActionExecuted,
    AgentFailed,
    ApprovalAwaited,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalTimedOut,
    EffectUncertain,
    EpisodeCompleted,
    EpisodeEscalated,
    EpisodeFailed,
    EpisodeResumed,
    EpisodeStarted,
    EscalationDecided,
    EscalationRequested,
    Event,
    ExecutionStarted,
    MemoryRecalled,
    MessagesRead,
    ModelResponded,
    agent_stream_id,
)
from tether.memory.store import Store
from tether.topologies.spec import Agent
from tether.topologies.topology import Topology

from .delegate import Delegate, Execution
from .escalation import Escalation, Escalations
from .handles import LocalHost
from .host import Host
from .inbox import Inbox, InboxItem, fold
from .supervisor import RootSupervisor


@dataclass(frozen=True)
class Reexecution:
    """The outcome of re-executing one episode."""

    episode_id: uuid.UUID
    identical: bool
    divergence: Divergence | None
    events_compared: int
    fed_back: dict[str, int]
    """Recorded inputs fed back, by kind (model turns, tool results, decisions)."""


# --- recorded inputs ------------------------------------------------------------------


class RecordedModel:
    """Answers an agent's model requests from its recorded turns, in order."""

    def __init__(self, agent: str, turns: list[ModelResponded | AgentFailed]) -> None:
        self.agent = agent
        self.turns = turns
        """Its turns, and where the run crashed (``AgentFailed`` "crashed: ...")."""
        self.cursor = 0
        self.failed = 0
        """Transient failures fed back for the current turn (the run's retries)."""

    @property
    def name(self) -> str:
        return f"recorded:{self.agent}"

    def respond(self, request: ModelRequest) -> ModelTurn:
        if self.cursor >= len(self.turns):
            raise ModelError(f"no recorded model turn for {self.agent} turn {request.turn}")
        recorded = self.turns[self.cursor]
        if isinstance(recorded, AgentFailed) and recorded.model_calls:
            # The run's model failed this turn, on each of its calls: so does this one
            # (retried failures, then the last one as it was).
            retried = f"model failed after {recorded.model_calls} attempts: "
            self.failed += 1
            if self.failed < recorded.model_calls:
                raise TransientModelError(recorded.reason.removeprefix(retried))
            self.cursor, self.failed = self.cursor + 1, 0
            if recorded.reason.startswith(retried):
                raise TransientModelError(recorded.reason.removeprefix(retried))
            raise ModelError(recorded.reason)
        if isinstance(recorded, AgentFailed):
            # The run crashed here (a model client or the agent's own code raised): raise
            # the same error, so the agent fails with the same reason.
            self.cursor += 1
            kind, _, message = recorded.reason.removeprefix("crashed: ").partition(": ")
            raise type(kind, (Exception,), {})(message)
        if self.failed < recorded.attempts - 1:
            # The run's provider failed this many times before answering: so does this one.
            self.failed += 1
            raise TransientModelError(f"recorded transient failure {self.failed}")
        self.cursor += 1
        self.failed = 0
        if recorded.turn != request.turn:
            raise ModelError(
                f"{self.agent} asked for turn {request.turn}; the record has "
                f"turn {recorded.turn} next"
            )
        return ModelTurn(
            text=recorded.text,
            tool_calls=recorded_calls(recorded),
            usage=Usage(**recorded.usage),
        )


def _no_wait(seconds: float) -> None:
    """Re-execution replays retries without their backoff: the waits change nothing."""


class CutShort(BaseException):
    """Where the recorded run stopped inside a tool (a crash cut the attempt short): the
    re-execution stops there too, as the process did, and goes on at the next resume."""


class RecordedDelegate(Delegate):
    """Answers executions from the recorded results; never calls a tool."""

    def __init__(
        self,
        store: Store,
        results: dict[tuple[str, int], ActionExecuted],
        attempts: dict[tuple[str, int], list[Event]] | None = None,
    ) -> None:
        super().__init__(store, _NoClock())
        self.results = results
        self.history = attempts or {}
        """Per action, its recorded ``ExecutionStarted``, ``ActionExecuted`` and
        ``EffectUncertain`` events in order: which attempts a crash cut short, and what
        reconciling found."""
        self.calls: dict[tuple[str, int], int] = {}
        self.fed = 0

    def _cut_short(self, agent: str, action: int, attempt: int) -> bool:
        """Whether the recorded run's ``attempt`` at this action was cut short: what
        follows its start is not the tool's own result (it is nothing, another attempt,
        a reconciled result, or a question to a person)."""
        events = self.history.get((agent, action), [])
        for i, e in enumerate(events):
            if isinstance(e, ExecutionStarted) and e.attempt == attempt:
                after = events[i + 1] if i + 1 < len(events) else None
                return not (
                    isinstance(after, ActionExecuted) and (after.attempts or after.effect_replayed)
                )
        return False

    def execute(
        self,
        tool: Tool,
        args: BaseModel,
        *,
        episode_id: uuid.UUID,
        agent: str,
        action: int,
        context: dict[str, Any],
        source_event: str = "",
        page: Callable[[int, int], list[dict[str, Any]]] | None = None,
    ) -> Execution:
        attempt = self.calls[(agent, action)] = self.calls.get((agent, action), 0) + 1
        if self._cut_short(agent, action, attempt):
            raise CutShort(f"{agent} #{action}: attempt {attempt} was cut short")
        recorded = self.results.get((agent, action))
        if recorded is None:
            return Execution(None, f"no recorded result for {agent} action {action}", 0)
        self.fed += 1
        error = recorded.reason if recorded.decision == "error" else None
        return Execution(
            recorded.result,
            error,
            recorded.attempts,
            recorded.effect_key,
            replayed=recorded.effect_replayed,
        )

    def effect(self, *args: Any, **kwargs: Any) -> tuple[Event, ...]:
        """No ledger entry: the effects ledger is the recorded run's, not compared."""
        return ()

    def reconcile(
        self,
        tool: Tool,
        args: BaseModel,
        *,
        episode_id: uuid.UUID,
        agent: str,
        action: int,
        context: dict[str, Any],
    ) -> Execution | None:
        """What reconciling found in the recorded run, after the attempt cut short."""
        events = self.history.get((agent, action), [])
        attempt = self.calls.get((agent, action), 0)
        after = [
            e
            for i, e in enumerate(events)
            if any(isinstance(p, ExecutionStarted) and p.attempt == attempt for p in events[:i])
        ]
        found = after[0] if after else None
        if isinstance(found, ActionExecuted) and found.result is not None:
            self.fed += 1
            return Execution(found.result, None, 0, found.effect_key)
        if isinstance(found, EffectUncertain) and "reconcile failed (" in found.reason:
            why = found.reason.split("reconcile failed (", 1)[1].rsplit("), and ", 1)[0]
            return Execution(None, why, 0, found.effect_key)
        return None  # it ran again: reconciling found nothing


class RecordedInbox(Inbox):
    """Reveals each recorded decision once the re-run reaches the point the run had it."""

    def __init__(
        self,
        store: Store,
        clock: Any,
        decisions: Mapping[uuid.UUID, tuple[int, Event]],
    ) -> None:
        super().__init__(store, clock)
        self.decisions = decisions
        self.visible_until = 0
        self.fed = 0

    def get(self, approval_id: uuid.UUID | str) -> InboxItem:
        item = super().get(approval_id)
        found = self.decisions.get(item.id)
        if found is None or found[0] > self.visible_until:
            return item
        self.fed += 1
        decided = fold([item.request, found[1]])
        assert decided is not None
        return decided


class RecordedEscalations(Escalations):
    """Reveals each recorded answer to an escalation once the re-run reaches it."""

    def __init__(
        self, store: Store, clock: Any, answers: Mapping[uuid.UUID, tuple[int, Event]]
    ) -> None:
        super().__init__(store, clock)
        self.answers = answers
        self.visible_until = 0

    def get(self, escalation_id: uuid.UUID | str) -> Escalation:
        item = super().get(escalation_id)
        found = self.answers.get(item.id)
        if found is None or found[0] > self.visible_until:
            return item
        decided = found[1]
        assert isinstance(decided, EscalationDecided)
        return dataclasses.replace(item, decision=decided)


class RecordedMemory:
    """Answers each agent's org-memory recalls with what it recalled in the run, in
    order (the scratch store has no org memory)."""

    def __init__(self) -> None:
        self.recalled: dict[str, list[MemoryRecalled]] = {}

    def __call__(self, subjects: list[str], by: str, at: datetime) -> list[dict[str, Any]]:
        name = by.rsplit("@", 1)[0]
        found = self.recalled.get(name, [])
        if not found:
            return []  # the run recalled nothing more: re-execution reports the difference
        return list(found.pop(0).facts)


class RecordedMailboxes:
    """Answers each agent's mailbox reads with what the run read at the same place in the
    agent's stream: messages from outside the fleet (``Host.send``) are not in the
    scratch store, and the agents' own are re-sent by their re-executed calls anyway."""

    def __init__(self) -> None:
        self.reads: dict[str, dict[int, MessagesRead]] = {}
        """Per agent: each recorded read, by its position in the agent's stream."""

    def __call__(self, episode_id: uuid.UUID, agent: str, journal: Any) -> Mailbox:
        reads = self.reads.get(agent, {})

        def read(after: int) -> list[tuple[int, str, str]]:
            found = reads.get(journal.version + 1)  # the read the run recorded next, here
            if found is None:
                return []
            taken = [
                (0, str(m.get("from")), str(m.get("body")))
                if isinstance(m, dict)
                else (0, "", str(m))  # (redacted since: compared as it is)
                for m in found.messages
            ]
            if taken:
                taken[-1] = (found.through, *taken[-1][1:])
            return taken

        return read


class RecordedClock:
    """The times the run read, in order; past the record, a microsecond per read."""

    def __init__(self, times: list[datetime]) -> None:
        self.times: Iterator[datetime] = iter(times)
        self.last = times[-1] if times else datetime(1970, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.last = next(self.times, self.last + timedelta(microseconds=1))
        return self.last


class RecordedIds:
    """The ids one drawer (an agent's gate, or the supervisor) drew, in order; past the
    record, ids derived from the episode and the drawer."""

    def __init__(self, ids: list[uuid.UUID], episode_id: uuid.UUID, drawer: str = "") -> None:
        self.ids: Iterator[uuid.UUID] = iter(ids)
        self.episode_id = episode_id
        self.drawer = drawer
        self.extra = 0

    def new(self) -> uuid.UUID:
        found = next(self.ids, None)
        if found is None:
            self.extra += 1
            found = uuid.uuid5(self.episode_id, f"reexecution:{self.drawer}:{self.extra}")
        return found


class _NoClock:
    def now(self) -> datetime:
        raise AssertionError("the recorded delegate reads no clock")


# --- running and comparing ------------------------------------------------------------


def reexecute(store: Store, episode_id: uuid.UUID, topology: Topology) -> Reexecution:
    """Re-execute an episode of ``topology`` on its recorded inputs and compare."""
    own = store.read_streams([episode_id])
    if not own or not isinstance(own[0][1], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    started = runnable(own[0][1])
    agents = {agent_stream_id(episode_id, name): name for name in started.agents}
    recorded = store.read_streams([episode_id, *agents])
    approvals = [e.approval_id for _, e in recorded if isinstance(e, ApprovalAwaited)]
    decisions = {
        e.originator_id: (n, e)
        for n, e in store.read_streams(approvals)
        if isinstance(e, ApprovalGranted | ApprovalDenied | ApprovalTimedOut)
    }
    requests: list[tuple[int, Event]] = [
        (n, e) for n, e in store.read_streams(approvals) if isinstance(e, ApprovalRequested)
    ]
    escalations = [
        e.escalation_id for _, e in recorded if isinstance(e, EpisodeEscalated | EffectUncertain)
    ]
    asked = store.read_streams(escalations)
    requests += [(n, e) for n, e in asked if isinstance(e, EscalationRequested)]
    answers = {e.originator_id: (n, e) for n, e in asked if isinstance(e, EscalationDecided)}
    # What each drawer drew and read, in its own order: an agent's gate its approval ids
    # and its stream's times; the supervisor its escalation ids and the times of the
    # episode stream and the requests. (Agents on several hosts record side by side, so
    # one order over all of them would not be the order a re-execution reads them in.)
    approval_ids: dict[str, list[uuid.UUID]] = {name: [] for name in started.agents}
    for _, e in recorded:
        if isinstance(e, ApprovalAwaited):
            approval_ids[agents[e.originator_id]].append(e.approval_id)
        elif isinstance(e, EffectUncertain):  # (the gate draws these ids too)
            approval_ids[agents[e.originator_id]].append(e.escalation_id)
    drawn = {name: RecordedIds(i, episode_id, name) for name, i in approval_ids.items()}
    escalated = [e.escalation_id for _, e in recorded if isinstance(e, EpisodeEscalated)]
    # (Who ran the episode is not re-executed: those events drew no time of the run's.)
    times = [
        e.at for _, e in sorted([*own, *requests], key=lambda p: p[0]) if not isinstance(e, RUNNERS)
    ]
    stream_times: dict[uuid.UUID, list[datetime]] = {stream: [] for stream in agents}
    for _, e in recorded:
        if e.originator_id in stream_times:
            stream_times[e.originator_id].append(e.at)
    clocks = {stream: RecordedClock(t) for stream, t in stream_times.items()}
    turns: dict[str, list[ModelResponded | AgentFailed]] = {name: [] for name in started.agents}
    results: dict[tuple[str, int], ActionExecuted] = {}
    attempts: dict[tuple[str, int], list[Event]] = {}
    memory = RecordedMemory()
    mailboxes = RecordedMailboxes()
    for _, e in recorded:
        name = agents.get(e.originator_id)
        if isinstance(e, ModelResponded) and name is not None:
            turns[name].append(e)
        elif (
            isinstance(e, AgentFailed)
            and name
            and (e.reason.startswith("crashed: ") or e.model_calls)
        ):
            # The run's code raised, or its model failed: re-execution fails there too.
            turns[name].append(e)
        elif isinstance(e, MemoryRecalled) and name is not None:
            memory.recalled.setdefault(name, []).append(e)
        elif isinstance(e, MessagesRead) and name is not None:
            mailboxes.reads.setdefault(name, {})[e.originator_version] = e
        elif isinstance(e, ActionExecuted) and name is not None:
            results[(name, e.action)] = e
            attempts.setdefault((name, e.action), []).append(e)
        elif isinstance(e, ExecutionStarted | EffectUncertain) and name is not None:
            attempts.setdefault((name, e.action), []).append(e)
    models = {name: RecordedModel(name, t) for name, t in turns.items()}

    def on_record(c: Agent) -> Agent:
        """The agent with its model replaced by its recorded turns (its price stays its
        own, or its model's: the recorded model has none)."""
        if c.name not in models:
            return c
        price = c.price or getattr(c.model, "price", None)
        return dataclasses.replace(c, model=models[c.name], price=price)

    replayed = topology.with_agents(on_record)

    with tempfile.TemporaryDirectory(prefix="tether-reexecute-") as scratch_dir:
        with Store(f"sqlite:///{Path(scratch_dir) / 'scratch.db'}") as scratch:
            clock = RecordedClock(times)
            ids = RecordedIds([episode_id, *escalated], episode_id)
            inbox = RecordedInbox(scratch, clock, decisions)
            asking = RecordedEscalations(scratch, clock, answers)
            delegate = RecordedDelegate(scratch, results, attempts)

            def supervisor() -> RootSupervisor:
                """A fresh host and supervisor over the recorded inputs, as at each resume."""
                host = Host(
                    replayed,
                    scratch,
                    clock,
                    ids,
                    inbox=inbox,
                    delegate=delegate,
                    sleep=_no_wait,
                    memory=memory,
                    mailboxes=mailboxes,
                    clocks=clocks.__getitem__,
                    ids_for=drawn.__getitem__,
                    escalations=asking,
                )
                return RootSupervisor(
                    replayed,
                    scratch,
                    LocalHost(host),
                    clock,
                    ids,
                    sleep=_no_wait,
                    escalations=asking,
                    fingerprint=started.fingerprint,  # (what it ran under is not re-decided)
                )

            with contextlib.suppress(CutShort):  # the run stopped where the record does
                supervisor().start(started.input, started.context, started.source, started.subject)
            # Continue where the run continued, with the decisions it had by then: at each
            # resume, and where an answer to an escalation ended the episode.
            previous: Any = None
            for n, e in own[1:]:
                answered = isinstance(previous, EpisodeEscalated) and isinstance(
                    e, EpisodeCompleted | EpisodeFailed
                )
                previous = e
                if isinstance(e, EpisodeResumed) or answered:
                    asking.visible_until = n
                    inbox.visible_until = n
                    with contextlib.suppress(CutShort):
                        supervisor().resume(episode_id)
            new = scratch.read_streams([episode_id, *agents])
    divergence = first_divergence(recorded, new, {episode_id: "episode", **agents})
    return Reexecution(
        episode_id,
        divergence is None,
        divergence,
        len(recorded),
        fed_back={
            "model_turns": sum(
                1
                for m in models.values()
                for t in m.turns[: m.cursor]
                if isinstance(t, ModelResponded)
            ),
            "tool_results": delegate.fed,
            "approval_decisions": inbox.fed,
        },
    )
