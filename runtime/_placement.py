"""Placement: which Ray host actor runs which agent.

Agents share one host actor by default (a fleet of thousands fits a small cluster); an
agent declared ``isolated=True`` gets a host actor of its own, on a node it prefers
(``Agent.node``) when one is alive. Hosts start when an agent on them first runs, and a
dead one is replaced on its own: the agents on the others go on. A host that died on a
node it was placed on is not placed on that node again in the same run: Ray may go on
calling a lost node alive for seconds after its processes are gone.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from tether.agents.loop import AgentOutcome
from tether.topologies.topology import Topology

from .handles import RayHost

SHARED = ""
"""The key of the host actor the agents that are not isolated share."""


class Placement:
    """An ``AgentHost`` over several Ray host actors, routing each agent to its own."""

    def __init__(
        self, topology: Topology, spawn: Callable[[frozenset[str] | None, str | None], Any]
    ) -> None:
        agents = topology.agents()
        shared = frozenset(n for n, a in agents.items() if not a.isolated)
        self.group = {n: (n if a.isolated else SHARED) for n, a in agents.items()}
        """Each agent's host key: its own name if isolated, else ``SHARED``."""
        everyone = len(shared) == len(agents)
        self.plans: dict[str, tuple[frozenset[str] | None, str | None]] = {
            SHARED: (None if everyone else shared, None),
            **{n: (frozenset({n}), a.node) for n, a in agents.items() if a.isolated},
        }
        self.spawn = spawn
        """Starts a host actor: (the agents it carries or None for all, a node id to
        prefer or None)."""
        self.hosts: dict[str, RayHost] = {}
        self.chosen: dict[str, str | None] = {}
        """The node each host was last placed on by preference."""
        self.avoid: set[str] = set()
        """Nodes where a preferred host died."""
        self._lock = threading.RLock()
        """Work in several lanes may start or replace hosts at once."""

    def lane(self, agent: str) -> str:
        """Each host actor is a lane: its agents run in turn, other hosts' side by side."""
        return self.group[agent]

    def host(self, agent: str) -> RayHost:
        """The host that runs ``agent``, started the first time it is needed."""
        key = self.group[agent]
        with self._lock:
            found = self.hosts.get(key)
            if found is None:
                found = self.hosts[key] = RayHost(lambda: self._spawn(key))
        return found

    def _spawn(self, key: str) -> Any:
        from .actor import node_with

        carries, resource = self.plans[key]
        avoid = frozenset(self.avoid)
        node = node_with(resource, avoid) if resource is not None else None
        if node is None and avoid:
            node = node_with(None, avoid)  # anywhere but where a host of this run died
        self.chosen[key] = node
        return self.spawn(carries, node)

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        return self.host(agent).run(episode_id, agent, task, by, answers, fence)

    def replace(self, agent: str | None = None) -> None:
        """Replace the host of ``agent`` (every host when None)."""
        with self._lock:
            hosts = {self.group[agent]: self.host(agent)} if agent is not None else self.hosts
            for key, host in list(hosts.items()):
                node = self.chosen.get(key)
                if node is not None:
                    self.avoid.add(node)
                host.replace()

    def stop(self) -> None:
        """Stop every host actor."""
        import ray

        for host in self.hosts.values():
            try:
                ray.kill(host.actor)
            except Exception:
                pass  # already gone
