"""The Ray shell around ``Host``: one actor process carries many agents.

Nothing here decides anything. The constructor opens the store and builds a ``Host``
(so a restarted actor rebuilds its agents from their events); each method forwards.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import ray

from tether.agents.loop import ActionResult, AgentOutcome
from tether.agents.model import ToolCall
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.store import Store
from tether.runtime.errors import ConfigError
from tether.topologies.spec import Topology

from .host import Host


class HostActor:
    """Carries the agents of one fleet in one Ray worker process."""

    def __init__(self, topology: Topology, store_url: str) -> None:
        self.host = Host(topology, Store(store_url), SystemClock(), RandomIds())

    def run(self, episode_id: uuid.UUID, agent: str, task: dict[str, Any] | None,
            by: str) -> AgentOutcome:
        return self.host.run(episode_id, agent, task, by)

    def act(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ActionResult:
        return self.host.act(episode_id, agent, call)

    def echo(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ToolCall:
        """A bare call with the same payload as ``act``: the benchmark's baseline."""
        return call


def ensure_ray(address: str | None = None) -> None:
    """Start (or join) Ray once per process."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)


def spawn_host(topology: Topology, store_url: str, user_module: str | None = None) -> Any:
    """Start a host actor for ``topology``. It takes no CPU slot, so many hosts fit a node;
    Ray does not restart it: tether's supervisor decides what a dead host means."""
    ensure_ray()
    if user_module is not None:
        module = sys.modules.get(user_module)
        if module is None:
            raise ConfigError(f"topology module {user_module!r} is not loaded")
        # A topology from a user's file is not importable in the worker: ship it by value.
        ray.cloudpickle.register_pickle_by_value(module)
    remote = ray.remote(num_cpus=0, max_restarts=0)(HostActor)
    return remote.remote(topology, store_url)
