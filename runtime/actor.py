"""The Ray shell around ``Host``: one actor process carries many agents.

Nothing here decides anything. The constructor opens the store and builds a ``Host``
(so a restarted actor rebuilds its agents from their events); each method forwards.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import ray

from tether.agents.loop import ActionResult, AgentOutcome
from tether.agents.model import ToolCall
from tether.memory.errors import HostError
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.store import Store
from tether.topologies.loader import Loaded, load_source
from tether.topologies.topology import Topology

from .host import Host


class HostActor:
    """Carries the agents of one fleet in one Ray worker process."""

    def __init__(
        self,
        topology: Topology | dict[str, Any],
        store_url: str,
        audit_key: str,
        carries: list[str] | None = None,
    ) -> None:
        if isinstance(topology, dict):
            # A file or module is loaded here, in the worker, as the driver loaded it.
            topology = load_source(topology).topology
        store = Store(store_url, audit_key=audit_key)
        self.host = Host(
            topology,
            store,
            SystemClock(),
            RandomIds(),
            carries=None if carries is None else frozenset(carries),
        )

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        return self.host.run(episode_id, agent, task, by, answers, fence)

    def start(
        self, episode_id: uuid.UUID, tasks: dict[str, dict[str, Any]], by: str = "operator"
    ) -> int:
        return self.host.start(episode_id, tasks, by)

    def send(self, episode_id: uuid.UUID, to: str, body: str, sender: str = "operator") -> int:
        return self.host.send(episode_id, to, body, sender)

    def act(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ActionResult:
        return self.host.act(episode_id, agent, call)

    def pid(self) -> int:
        """This worker's process id (benchmarks read its memory; tests kill it)."""
        return os.getpid()

    def echo(self, episode_id: uuid.UUID, agent: str, call: ToolCall) -> ToolCall:
        """A bare call with the same payload as ``act``: the benchmark's baseline."""
        return call


def ensure_ray(address: str | None = None) -> None:
    """Start (or join) Ray once per process."""
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
            _reap_when_gone()
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        where = f"the cluster at {address}" if address else "a local Ray instance"
        raise HostError(
            "ray", f"could not start or join {where}: {type(e).__name__}: {e}".splitlines()[0]
        ) from e


_lifeline: int | None = None
"""The write end of the pipe the reaper watches; never written, closed only when this
process exits."""


def _reap_when_gone() -> None:
    """Have the local Ray just started stopped once this process is gone, even by kill -9
    (``runtime/_reaper.py``): nothing of it outlives the fleet. Best effort: a Ray
    without the node's internals tether reads here runs as before."""
    global _lifeline
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    if node is None or _lifeline is not None:
        return
    pids = [str(i.process.pid) for infos in node.all_processes.values() for i in infos]
    reaper = str(Path(__file__).with_name("_reaper.py"))
    watched, _lifeline = os.pipe()  # neither end is inherited by what Ray starts later
    try:
        subprocess.run(
            [sys.executable, reaper, node.get_session_dir_path(), *pids],
            stdin=watched,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the driver does not reach it
            check=False,
        )
    finally:
        os.close(watched)


def _check_reachable(address: str) -> None:
    """Fail fast on a cluster address nothing answers at (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in host:
        return  # "auto", or a client URL: leave it to Ray
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except OSError as e:
        raise HostError(
            "ray",
            f"nothing answers at --address {address} ({e}); start the "
            "cluster with `ray start --head` or fix the address",
        ) from e


def spawn_host(
    loaded: Loaded,
    store: Store,
    carries: frozenset[str] | None = None,
    node_id: str | None = None,
) -> Any:
    """Start a host actor for a topology (for the agents it ``carries``; None = all).
    It takes no CPU slot, so many hosts fit a node; Ray does not restart it: tether's
    supervisor decides what a dead host means. With ``node_id``, it goes to that node
    (hard affinity: Ray's soft affinity spilled a first actor to another node here even
    when the node was alive); when the node cannot take it, the host dies at once and its
    supervisor places the replacement elsewhere (``runtime/_placement.py``).

    A topology from a file or a module is loaded again inside the worker, from its source;
    one built in Python code is shipped by value (cloudpickle). The host opens the same
    store, and signs the audit trail with the same key file, as ``store``.
    """
    ensure_ray()
    shipped: Topology | dict[str, Any] = (
        loaded.source if loaded.source.get("kind") in ("file", "module") else loaded.topology
    )
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
    if node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    remote = ray.remote(**options)(HostActor)
    chosen = None if carries is None else sorted(carries)
    return remote.remote(shipped, store.url, str(store.audit_key_path), chosen)


def node_with(resource: str | None, avoid: frozenset[str] = frozenset()) -> str | None:
    """The id of a node Ray believes alive, not in ``avoid``, that has ``resource``
    (None: any such node), if there is one."""
    for n in ray.nodes():  # type: ignore[no-untyped-call]
        found = str(n.get("NodeID"))
        has = resource is None or n.get("Resources", {}).get(resource, 0) > 0
        if n.get("Alive") and has and found not in avoid:
            return found
    return None
