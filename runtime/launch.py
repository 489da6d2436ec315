"""One call to run a fleet: ``run(topology, task=...)``; one to continue it: ``resume(id)``.

Both start Ray if it is not running (``ray.init`` locally, or join ``address``), place
the fleet's agents on host actors (``runtime/_placement.py``: one shared, and one for each
isolated agent), and stop them when the supervisor is done. Each takes the episode's lease
first (``memory/leases.py``): a second runner of the same episode runs nothing.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.memory.audit import episode_act
from tether.memory.episodes import runnable
from tether.memory.errors import (
    ApprovalNotFound,
    ConfigError,
    EpisodeEnded,
    EpisodeLeased,
    EpisodeNotFound,
    TopologyChanged,
)
from tether.memory.events import (
    EpisodeCancelled,
    EpisodeEscalated,
    EpisodeStarted,
    EpisodeSuspended,
    Event,
)
from tether.memory.leases import Lease, pid_alive, this_host
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.store import Fencing, Journal, Store
from tether.topologies.loader import Loaded, load_source
from tether.topologies.topology import Topology

from ._placement import Placement
from .escalation import Escalations
from .inbox import Inbox
from .supervisor import EpisodeReport, RootSupervisor, ended_report, topology_changes


def run(
    topology: Topology | Loaded,
    task: dict[str, Any] | None = None,
    *,
    context: dict[str, Any] | None = None,
    subject: str | None = None,
    db: str | None = None,
    address: str | None = None,
    on_episode: Callable[[uuid.UUID], None] | None = None,
    owner: str | None = None,
) -> EpisodeReport:
    """Run one episode of ``topology`` on Ray until it completes, fails, or waits for a person.

    ``subject`` names the data subject the episode is about (``customer:ada``): its personal
    data is written sealed under that subject's key, so ``tether forget`` can erase it.
    ``on_episode`` is told the episode's id once it is recorded (a progress display).
    ``owner`` names the runner in the episode's lease (default: ``tether run by USER``).
    """
    loaded = (
        topology
        if isinstance(topology, Loaded)
        else Loaded(topology, {"kind": "python", "name": topology.name})
    )
    the_task = task if task is not None else (loaded.task or {})
    the_context = context if context is not None else loaded.context
    the_subject = subject if subject is not None else loaded.subject
    with Store(db) as store:
        return on_hosts(
            loaded,
            store,
            address,
            lambda sup: sup.start(the_task, the_context, loaded.source, the_subject),
            on_episode,
            owner=owner or _owner("tether run"),
        )


def resume(
    episode_id: uuid.UUID | str,
    *,
    topology: Topology | None = None,
    db: str | None = None,
    address: str | None = None,
    on_episode: Callable[[uuid.UUID], None] | None = None,
    take_over: bool = False,
    accept_changed: bool = False,
    owner: str | None = None,
) -> EpisodeReport:
    """Continue an episode from the store; its topology is loaded from where it came from.

    An episode that ended, or that still waits for a person who has not decided, is
    answered from the store without starting Ray. ``take_over`` takes the episode from a
    runner that still holds its lease; ``accept_changed`` resumes it under a topology
    that changed since it started (both are recorded)."""
    episode = parse_episode_id(episode_id)
    if on_episode is not None:
        on_episode(episode)
    with Store(db, mode="existing") as store:
        events = store.read(episode)
        if not events or not isinstance(events[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        runnable(events[0])
        # Requests past their deadline are denied as timed out before anyone goes on.
        Inbox(store, SystemClock()).expire()
        ended = ended_report(events)
        if ended is not None:
            return ended
        waiting = still_waiting(store, events)
        if waiting is not None:
            return waiting
        if not take_over:
            _free_or_raise(store, episode)
        if topology is not None:
            loaded = Loaded(topology, events[0].source)
        else:
            loaded = load_source(events[0].source)
        changes = topology_changes(events, loaded.fingerprint())
        if changes and not accept_changed:
            raise TopologyChanged(str(episode), changes)
        return on_hosts(
            loaded,
            store,
            address,
            lambda sup: sup.resume(episode, take_over=take_over, accept_changed=accept_changed),
            owner=owner or _owner("tether resume"),
        )


def still_waiting(store: Store, events: list[Event]) -> EpisodeReport | None:
    """The episode's report if it is suspended and nobody has answered any of what it
    waits for (approvals, escalations) yet: resuming it would change nothing."""
    last = events[-1]
    if isinstance(last, EpisodeSuspended):
        ids, agent, output = last.waiting, last.agent, ""
    elif isinstance(last, EpisodeEscalated):
        ids, agent, output = [str(last.escalation_id)], last.agent, last.reason
    else:
        return None
    inbox, asking = Inbox(store, SystemClock()), Escalations(store, SystemClock())
    for i in ids:
        try:
            if inbox.get(i).status != "pending":
                return None
            continue
        except ApprovalNotFound:
            pass
        try:
            if asking.get(i).decision is not None:
                return None
        except ApprovalNotFound:
            return None  # neither: let the supervisor sort it out
    return EpisodeReport(last.originator_id, "waiting", agent, output, tuple(ids))


@dataclass(frozen=True)
class Cancelled:
    """What ``cancel`` did."""

    episode_id: uuid.UUID
    was: str
    """How the episode stood: running (a live runner held it), waiting (for a person), or
    stuck (it had not ended, and no one ran it)."""
    denied: tuple[str, ...]
    """Approval requests of the episode it denied."""
    aborted: tuple[str, ...]
    """Escalations of the episode it answered with abort."""


def cancel(
    episode_id: uuid.UUID | str, *, by: str, reason: str, db: str | None = None
) -> Cancelled:
    """End an episode that is running, waiting or stuck: recorded (``EpisodeCancelled``,
    in the audit trail too), its lease taken from any runner (whose appends are refused
    from then on) and released, its pending approvals denied and its escalations aborted.
    Escalations about a side effect a crash left uncertain stay open: cancelling does not
    tell anyone whether the effect happened."""
    episode = parse_episode_id(episode_id)
    if not reason.strip():
        raise ConfigError("--reason: say why the episode is cancelled (it is recorded)")
    if not by.strip():
        raise ConfigError("--as: the identity of who cancels is required")
    with Store(db, mode="existing") as store:
        events = store.read(episode)
        if not events or not isinstance(events[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        ended = ended_report(events)
        if ended is not None:
            raise EpisodeEnded(str(episode), f"already {ended.status}")
        held = store.leases.current(episode)
        if _live(store, held):
            was = "running"
        elif isinstance(events[-1], EpisodeSuspended | EpisodeEscalated):
            was = "waiting"
        else:
            was = "stuck"
        lease, _ = store.leases.take(episode, f"tether cancel by {by}", take_over=True)
        try:
            events = store.read(episode)
            ended = ended_report(events)
            if ended is not None:  # it ended while we looked
                raise EpisodeEnded(str(episode), f"already {ended.status}")
            journal = Journal.after(store, episode, SystemClock(), events)
            journal.subject = events[0].subject if isinstance(events[0], EpisodeStarted) else None
            journal.fence = Fencing(episode, lease.token)
            event = journal.record(EpisodeCancelled, by=by, reason=reason, was=was)
            journal.pending_audit.append(
                episode_act(
                    str(episode),
                    "cancel",
                    "cancelled",
                    by,
                    event.at.isoformat(),
                    f"{episode}/{event.originator_version}",
                )
            )
            journal.flush()
        finally:
            store.leases.release(lease)
        why = f"the episode was cancelled: {reason}"
        inbox, asking = Inbox(store, SystemClock()), Escalations(store, SystemClock())
        denied = tuple(
            str(inbox.deny(i.id, by, why).id)
            for i in inbox.items("pending")
            if i.request.episode_id == episode
        )
        aborted = tuple(
            str(asking.decide(x.id, "abort", by, why).id)
            for x in asking.items()
            if x.request.episode_id == episode and "abort" in x.request.options
        )
    return Cancelled(episode, was, denied, aborted)


def _live(store: Store, held: Lease | None) -> bool:
    """Whether a runner holds this lease now (not released, not expired, and not a
    process of this host that is gone)."""
    if held is None or held.released or held.expires <= store.leases.now():
        return False
    return held.host != this_host() or pid_alive(held.pid)


def _free_or_raise(store: Store, episode: uuid.UUID) -> None:
    """``EpisodeLeased`` if another live runner holds the episode (checked before Ray
    starts; the supervisor takes the lease for real)."""
    held = store.leases.current(episode)
    if held is not None and _live(store, held):
        raise EpisodeLeased(held)


def _owner(program: str) -> str:
    try:
        return f"{program} by {getpass.getuser()}"
    except (KeyError, OSError):
        return program


def parse_episode_id(value: uuid.UUID | str) -> uuid.UUID:
    """An episode id from user input; ``EpisodeNotFound`` for anything that is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise EpisodeNotFound(value) from None


def on_hosts(
    loaded: Loaded,
    store: Store,
    address: str | None,
    work: Any,
    on_episode: Callable[[uuid.UUID], None] | None = None,
    *,
    owner: str = "tether",
) -> EpisodeReport:
    """Do ``work`` with a supervisor over the fleet's Ray host actors (placed as its
    agents ask), and stop the hosts after: what ``run`` and ``resume`` do, for callers
    that run several episodes on the same hosts (the benchmark)."""
    store.ensure_shared("Ray host actors")  # before Ray starts: they could not open it
    from .actor import ensure_ray, spawn_host

    ensure_ray(address)
    hosts = Placement(
        loaded.topology, lambda carries, node: spawn_host(loaded, store, carries, node)
    )
    try:
        supervisor = RootSupervisor(
            loaded.topology,
            store,
            hosts,
            SystemClock(),
            RandomIds(),
            owner=owner,
            fingerprint=loaded.fingerprint(),
        )
        supervisor.on_episode = on_episode
        report: EpisodeReport = work(supervisor)
        return report
    finally:
        hosts.stop()
