"""Ten thousand logical agents on one Ray host actor, on this 2-core machine: started in
one transaction, each messaged and run to its end, every step on record."""

from __future__ import annotations

import os

import pytest
import ray

from tether.agents import ScriptedModel, say
from tether.memory import Store
from tether.memory.events import (
    AgentFinished,
    MessageSent,
    MessagesRead,
    agent_stream_id,
    mailbox_stream_id,
)
from tether.memory.sources import RandomIds, SystemClock
from tether.runtime.actor import spawn_host
from tether.runtime.handles import RayHost
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Loaded, Role, Supervisor, Topology

pytestmark = pytest.mark.ray

AGENTS = int(os.environ.get("TETHER_FLEET_AGENTS", "10000"))


def fleet(n: int) -> Topology:
    workers = tuple(
        Agent(f"w{i}", Role("worker"), ScriptedModel([say(f"w{i} done")])) for i in range(n)
    )
    return Topology("swarm", Supervisor("root", workers))


def test_ten_thousand_logical_agents_run_on_one_host(ray_session: None, sqlite_url: str) -> None:
    topology = fleet(AGENTS)
    with Store(sqlite_url) as store:
        host = RayHost(lambda: spawn_host(Loaded(topology, {"kind": "python"}), store))
        try:
            supervisor = RootSupervisor(topology, store, host, SystemClock(), RandomIds())
            episode = supervisor.open({"survey": "all"})
            actor = host.actor
            names = list(topology.agents())
            started = ray.get(actor.start.remote(episode, {n: {"part": n} for n in names}))
            assert started == AGENTS
            sent = ray.get([actor.send.remote(episode, n, f"hello {n}") for n in names])
            # Each message has a notification id of its own: its place in the store's one
            # order of all events (its place in its mailbox is checked below).
            assert len(set(sent)) == AGENTS
            outcomes = ray.get([actor.run.remote(episode, n, None, "operator") for n in names])
            assert {o.outcome for o in outcomes} == {"finished"}
            assert [o.output for o in outcomes[:2]] == ["w0 done", "w1 done"]
        finally:
            ray.kill(host.actor)
        # Every agent's stream holds its task, the message it read and its answer.
        streams = {agent_stream_id(episode, n): n for n in names}
        finished, read = set(), set()
        for _, e in store.read_streams(streams):
            if isinstance(e, AgentFinished):
                finished.add(streams[e.originator_id])
            elif isinstance(e, MessagesRead):
                assert e.messages == [
                    {"from": "operator", "body": f"hello {streams[e.originator_id]}"}
                ]
                read.add(streams[e.originator_id])
        assert finished == read == set(names)
        # Each mailbox holds its one message, first in it, under the id send returned.
        mailboxes = {mailbox_stream_id(episode, n): n for n in names}
        held = {
            mailboxes[e.originator_id]: (e.originator_version, notification)
            for notification, e in store.read_streams(mailboxes)
            if isinstance(e, MessageSent)
        }
        assert held == {n: (1, notification) for n, notification in zip(names, sent, strict=True)}
