"""One call to run a fleet: ``run(topology, task=...)``; one to continue it: ``resume(id)``.

Both start Ray if it is not running (``ray.init`` locally, or join ``address``), place
the fleet's agents on host actors (``runtime/placement.py``: one shared, and one for each
isolated agent), and stop them when the supervisor is done.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tether.memory.episodes import runnable
from tether.memory.events import EpisodeStarted
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.store import Store
from tether.runtime.errors import EpisodeNotFound
from tether.topologies.loader import Loaded, load_source
from tether.topologies.spec import Topology

from .inbox import Inbox
from .placement import Placement
from .supervisor import EpisodeReport, RootSupervisor


def run(
    topology: Topology | Loaded,
    task: dict[str, Any] | None = None,
    *,
    context: dict[str, Any] | None = None,
    subject: str | None = None,
    db: str | None = None,
    address: str | None = None,
    on_episode: Callable[[uuid.UUID], None] | None = None,
) -> EpisodeReport:
    """Run one episode of ``topology`` on Ray until it completes, fails, or waits for a person.

    ``subject`` names the data subject the episode is about (``customer:ada``): its personal
    data is written sealed under that subject's key, so ``tether forget`` can erase it.
    ``on_episode`` is told the episode's id once it is recorded (a progress display).
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
        )


def resume(
    episode_id: uuid.UUID | str,
    *,
    topology: Topology | None = None,
    db: str | None = None,
    address: str | None = None,
    on_episode: Callable[[uuid.UUID], None] | None = None,
) -> EpisodeReport:
    """Continue an episode from the store; its topology is loaded from where it came from."""
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
        if topology is not None:
            loaded = Loaded(topology, events[0].source)
        else:
            loaded = load_source(events[0].source)
        return on_hosts(loaded, store, address, lambda sup: sup.resume(episode))


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
) -> EpisodeReport:
    """Do ``work`` with a supervisor over the fleet's Ray host actors (placed as its
    agents ask), and stop the hosts after: what ``run`` and ``resume`` do, for callers
    that run several episodes on the same hosts (the benchmark)."""
    from .actor import ensure_ray, spawn_host

    ensure_ray(address)
    hosts = Placement(
        loaded.topology, lambda carries, node: spawn_host(loaded, store, carries, node)
    )
    try:
        supervisor = RootSupervisor(loaded.topology, store, hosts, SystemClock(), RandomIds())
        supervisor.on_episode = on_episode
        report: EpisodeReport = work(supervisor)
        return report
    finally:
        hosts.stop()
