"""The restart policy: after an agent fails, which supervisor restarts what, and when one
gives up (OTP's semantics, counted over the recorded episode). Plain logic over the store,
so it is tested without Ray and without running a supervisor."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from tether.memory.events import (
    AgentFailed,
    AgentRestarted,
    EpisodeEscalated,
    TaskAssigned,
    agent_stream_id,
)
from tether.memory.store import Journal, Store
from tether.topologies.spec import Supervisor
from tether.topologies.topology import Topology


class RestartPolicy:
    """Decides and records the restarts of one topology's episodes."""

    def __init__(
        self,
        topology: Topology,
        store: Store,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: random.Random | None = None,
    ) -> None:
        self.topology = topology
        self.store = store
        self.sleep = sleep
        """How it waits before a restart (re-execution does not wait)."""
        self.jitter = jitter or random.Random()
        """Spreads the backoff, so restarts after one shared failure do not fall in step."""

    def restart(
        self,
        journal: Journal,
        failed: str,
        reason: str,
        episode_input: dict[str, Any],
        call: str | None = None,
    ) -> tuple[str, dict[str, Any], str] | str:
        """Restart after ``failed`` failed, as its supervisor's policy says: the agent to
        run, its task and who gives it; or, when no supervisor up the tree will restart
        it, why the root gives up.

        A supervisor past its intensity gives up to its own supervisor, which restarts
        the work of the one that gave up (counted in its own window); a failure for want
        of budget goes straight to a person, since no supervisor can add budget. A
        delegated task (``call``) is restarted alone, whatever the strategy: the agent
        that delegated it waits for it, and is told if it fails for good."""
        if self.topology.agents()[failed].restart == "temporary":
            return reason
        if reason.startswith("budget:"):
            return reason  # a restart could not find more budget
        episode_id = journal.stream_id
        history = self.store.read(agent_stream_id(episode_id, failed))
        failed_at = next((e.at for e in reversed(history) if isinstance(e, AgentFailed)), None)
        if failed_at is None:
            return reason
        found = self.who_restarts(journal, failed, reason, failed_at)
        if isinstance(found, str):
            return found
        sup, n, child, reason = found
        strategy = sup.restarts.strategy
        if strategy == "one_for_all" and call is None:
            work: tuple[str, dict[str, Any], str] | None = self.work_of(
                episode_id, sup.name, episode_input
            )
        elif child == failed or call is not None:  # rest_for_one is one_for_one, in turn
            last = last_task(self.store, episode_id, failed)
            work = (failed, last.task, last.by) if last is not None else None
        else:  # a nested supervisor that gave up: its work starts over
            work = self.work_of(episode_id, child, episode_input)
        if work is None:
            return reason  # it failed before it was given a task: nothing to restart
        self.record(journal, work[0], child, reason, strategy, n, sup.name)
        return work

    def who_restarts(
        self, journal: Journal, agent: str, reason: str, at: datetime
    ) -> tuple[Supervisor, int, str, str] | str:
        """The nearest supervisor above ``agent`` still within its intensity: it, the
        number of its restart, the child it restarts (the agent, or the nested supervisor
        below it that gave up) and the reason as it stands; or why the root gave up."""
        child = agent
        for sup in self.topology.chain(agent):
            n = self.next_restart(journal, sup, reason, at)
            if isinstance(n, int):
                return sup, n, child, reason
            reason, child = n, sup.name  # it gave up: its supervisor decides
        return reason

    def work_of(
        self, episode_id: uuid.UUID, supervisor: str, episode_input: dict[str, Any]
    ) -> tuple[str, dict[str, Any], str] | None:
        """A supervisor's work from its start: the first task any agent under it was
        given, to that agent, from the same giver (the root's: the episode's input)."""
        if supervisor == self.topology.root.name:
            return self.topology.entry, episode_input, "operator"
        under = {agent_stream_id(episode_id, n): n for n in self.topology.under(supervisor)}
        first = next(
            (
                e
                for _, e in self.store.read_streams(under)
                if isinstance(e, TaskAssigned) and "call" not in e.task
            ),
            None,
        )
        return (first.agent, first.task, first.by) if first is not None else None

    def next_restart(
        self, journal: Journal, sup: Supervisor, reason: str, at: datetime
    ) -> int | str:
        """The number of ``sup``'s restart to make now, after waiting out its backoff; or,
        if its restarts within the window (up to ``at``, a recorded time) reached its
        intensity, why it gives up."""
        policy = sup.restarts
        since = at - timedelta(seconds=policy.period_s)
        above = {s.name for s in self.topology.chain(sup.name)}
        mine = {sup.name} | ({""} if sup is self.topology.root else set())
        recent: list[AgentRestarted] = []
        for e in self.store.read(journal.stream_id):
            if isinstance(e, EpisodeEscalated):
                recent = []  # a person's retry opens a new window
            elif not isinstance(e, AgentRestarted):
                continue
            elif e.supervisor in above and (
                e.failed in above | {sup.name} or e.strategy == "one_for_all"
            ):
                recent = []  # restarted from above, a supervisor starts with a fresh count
            elif e.supervisor in mine and e.at > since and e.restart > 0:
                recent.append(e)  # (a person's retry, restart 0, is not the supervisor's)
        if len(recent) >= policy.max_restarts:
            return (
                f"{sup.name} gave up after {len(recent)} restarts within "
                f"{policy.period_s:g} s ({policy.strategy}): {reason}"
            )
        wait = min(policy.max_backoff_s, policy.backoff_s * 2 ** len(recent))
        if wait > 0:
            self.sleep(wait * self.jitter.uniform(0.5, 1.0))
        return len(recent) + 1

    def record(
        self,
        journal: Journal,
        agent: str,
        failed: str,
        reason: str,
        strategy: str,
        n: int,
        supervisor: str,
    ) -> None:
        """Record that ``supervisor`` restarts ``agent`` (its restart number ``n``)."""
        journal.record(
            AgentRestarted,
            agent=agent,
            failed=failed,
            reason=reason,
            restart=n,
            strategy=strategy,
            supervisor=supervisor,
        )
        journal.flush()


def last_task(store: Store, episode_id: uuid.UUID, agent: str) -> TaskAssigned | None:
    """The task the agent was given last, if any."""
    history = store.read(agent_stream_id(episode_id, agent))
    return next((e for e in reversed(history) if isinstance(e, TaskAssigned)), None)
