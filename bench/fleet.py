"""Fleet benchmarks on Ray: starting logical agents, messages, restarts, memory at rest.

Each figure is measured against a baseline in the same run where the issue asks for a
ratio: logical agents against as many agents on one Ray actor each (``bench/baseline.py``),
mailbox deliveries against raw pipelined Ray actor calls.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import ray
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolCall, ToolContext, call, say, tool
from tether.memory import Store, SystemClock
from tether.memory.sources import RandomIds
from tether.runtime.actor import ensure_ray, spawn_host
from tether.runtime.handles import RayHost
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Restarts, Role, Supervisor, Topology
from tether.topologies.loader import Loaded

from .baseline import OneAgent

BODY = "x" * 256


def swarm(n: int) -> Topology:
    """``n`` agents, each allowed to message the next."""
    workers = tuple(
        Agent(
            f"w{i}",
            Role("worker"),
            ScriptedModel([say("done")]),
            peers=(f"w{(i + 1) % n}",) if n > 1 else (),
        )
        for i in range(n)
    )
    return Topology("swarm", Supervisor("root", workers))


def _host(topology: Topology, store: Store) -> tuple[RayHost, Any]:
    host = RayHost(lambda: spawn_host(Loaded(topology, {"kind": "python"}), store))
    supervisor = RootSupervisor(topology, store, host, SystemClock(), RandomIds())
    return host, supervisor.open({"bench": True})


def _memory(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) summed over processes, in MB. RSS counts the pages processes share (the
    interpreter, Ray's libraries) once per process; PSS splits each shared page among
    those sharing it, so a sum over processes counts it once."""
    rss = pss = 0
    for pid in pids:
        full = psutil.Process(pid).memory_full_info()
        rss += full.rss
        pss += full.pss
    return rss / 1e6, pss / 1e6


def start(tmp: Path, n: int = 8, rounds: int = 3) -> dict[str, float]:
    """``n`` logical agents started on a shared host actor against ``n`` agents started
    as one Ray actor each, alternating ``rounds`` times; the medians.

    Started means: for tether, a host actor spawned and the agents rebuilt there and given
    their tasks in one transaction (as ``tether run`` starts a fleet); for the baseline,
    each actor constructed and given its task (a bare Ray actor per agent, its state in
    memory, its module importing nothing of tether). Equal counts, so the ratio does not
    grow with ``n`` by construction; ``n`` is small because the baseline starts about one
    Ray worker process a second on two cores. Then the memory each side holds per agent
    at rest: the host actor's, or the sum of the agents' actors', over ``n``.
    """
    topology = swarm(n)
    tasks = {name: {"part": name} for name in topology.agents()}
    remote = ray.remote(num_cpus=0)(OneAgent)
    rates: dict[str, list[float]] = {"logical": [], "actors": []}
    rss: dict[str, list[float]] = {"logical": [], "actors": []}
    pss: dict[str, list[float]] = {"logical": [], "actors": []}
    for r in range(rounds):
        with Store(f"sqlite:///{tmp / f'start{r}.db'}") as store:
            t0 = time.perf_counter()
            host, episode = _host(topology, store)
            started = ray.get(host.actor.start.remote(episode, tasks))
            rates["logical"].append(n / (time.perf_counter() - t0))
            assert started == n
            memory = _memory([ray.get(host.actor.pid.remote())])
            ray.kill(host.actor)
        rss["logical"].append(memory[0] / n)
        pss["logical"].append(memory[1] / n)
        t0 = time.perf_counter()
        handles = [remote.remote(name) for name in tasks]
        ray.get([h.start.remote(task) for h, task in zip(handles, tasks.values(), strict=True)])
        rates["actors"].append(n / (time.perf_counter() - t0))
        memory = _memory(ray.get([h.pid.remote() for h in handles]))
        for h in handles:
            ray.kill(h)
        rss["actors"].append(memory[0] / n)
        pss["actors"].append(memory[1] / n)
    ratios = [a / b for a, b in zip(rates["logical"], rates["actors"], strict=True)]
    logical, actors = statistics.median(rates["logical"]), statistics.median(rates["actors"])
    print(
        f"{n} agents started (median of {rounds}): {logical:.1f}/s as logical agents on one "
        f"host actor, {actors:.2f}/s as one Ray actor each; at rest, per agent: "
        f"{statistics.median(rss['logical']):.1f} MB RSS "
        f"({statistics.median(pss['logical']):.1f} MB PSS) on the host, "
        f"{statistics.median(rss['actors']):.1f} MB RSS "
        f"({statistics.median(pss['actors']):.1f} MB PSS) as actors",
        file=sys.stderr,
    )
    return {
        "agents_per_s_logical": round(logical, 2),
        "actors_per_s": round(actors, 2),
        "logical_vs_actors_start": round(statistics.median(ratios), 2),
        "start_agents": n,
        "rss_per_agent_logical_mb": round(statistics.median(rss["logical"]), 1),
        "rss_per_agent_actor_mb": round(statistics.median(rss["actors"]), 1),
        "pss_per_agent_logical_mb": round(statistics.median(pss["logical"]), 1),
        "pss_per_agent_actor_mb": round(statistics.median(pss["actors"]), 1),
    }


def messages(tmp: Path, n: int = 2_000, rounds: int = 3) -> dict[str, float]:
    """Messages delivered per second into agents' mailboxes through a host actor (each a
    durable append), pipelined, against raw pipelined calls to a Ray actor with the same
    arguments; the median of ``rounds`` alternating rounds. Also: messages per second an
    agent sends with ``send_message``, through the whole gate, in the host."""
    topology = swarm(100)
    names = list(topology.agents())
    baseline = ray.remote(num_cpus=0)(OneAgent).remote("peer")
    with Store(f"sqlite:///{tmp / 'messages.db'}") as store:
        host, episode = _host(topology, store)
        actor = host.actor
        ray.get(actor.start.remote(episode, {name: {} for name in names}))
        ray.get(baseline.ready.remote())
        ratios, tether_rates, ray_rates = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ray.get([actor.send.remote(episode, names[i % 100], BODY) for i in range(n)])
            tether_rate = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            ray.get([baseline.deliver.remote(episode, names[i % 100], BODY, "x") for i in range(n)])
            ray_rate = n / (time.perf_counter() - t0)
            ratios.append(tether_rate / ray_rate)
            tether_rates.append(tether_rate)
            ray_rates.append(ray_rate)
        sends = [
            actor.act.remote(
                episode,
                names[i % 100],
                ToolCall("send_message", {"to": names[(i + 1) % 100], "body": BODY}),
            )
            for i in range(n // 4)
        ]
        t0 = time.perf_counter()
        outcomes = ray.get(sends)
        gate_rate = len(sends) / (time.perf_counter() - t0)
        assert {o.outcome for o in outcomes} == {"executed"}, outcomes[0]
        ray.kill(actor)
    ray.kill(baseline)
    print(
        f"mailbox deliveries through a host actor: {statistics.median(tether_rates):.0f}/s; "
        f"raw pipelined actor calls: {statistics.median(ray_rates):.0f}/s; send_message "
        f"through the gate: {gate_rate:.0f}/s",
        file=sys.stderr,
    )
    return {
        "msg_vs_ray": round(statistics.median(ratios), 3),
        "messages_per_s": round(statistics.median(tether_rates)),
        "ray_calls_per_s": round(statistics.median(ray_rates)),
        "send_message_via_gate_per_s": round(gate_rate),
    }


class Nothing(BaseModel):
    pass


MARKS = Path(os.environ.get("TETHER_BENCH_MARKS", "/tmp/tether-bench-marks"))


# Idempotent (it does nothing the second time), so a restart runs it again: restart_ms
# measures the way back to work, not a wait for a person.
@tool(idempotent=True)
def crash(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Kill this worker process the first time (its time on record), as a crash would."""
    flag = MARKS / f"{ctx.episode_id}.crashed"
    if not flag.exists():
        flag.write_text(repr(time.time()))
        os._exit(9)
    return {}


@tool(read_only=True)
def mark(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Note when the agent runs again."""
    (MARKS / f"{ctx.episode_id}.running").write_text(repr(time.time()))
    return {}


def restarts(tmp: Path, trials: int = 5) -> dict[str, float]:
    """Median milliseconds from a host actor's worker dying (inside a tool call) to its
    agent running its next action on a new host actor: the supervisor sees the death,
    starts a host, the agent is rebuilt from the store, asks its model, and the action
    passes the gate."""
    MARKS.mkdir(parents=True, exist_ok=True)
    grants = (Grant("crash", tier="low"), Grant("mark", tier="low"))
    topology = Topology(
        "crashy",
        Supervisor(
            "root",
            (
                Agent(
                    "a",
                    Role("a", grants),
                    ScriptedModel([call("crash"), call("mark"), say("done")]),
                    (crash, mark),
                ),
            ),
            restarts=Restarts(backoff_s=0, max_restarts=3),
        ),
    )
    samples = []
    with Store(f"sqlite:///{tmp / 'restarts.db'}") as store:
        for _ in range(trials):
            host = RayHost(lambda: spawn_host(Loaded(topology, {"kind": "python"}), store))
            supervisor = RootSupervisor(topology, store, host, SystemClock(), RandomIds())
            report = supervisor.start({"go": True})
            ray.kill(host.actor)
            assert report.status == "completed", report
            died = float((MARKS / f"{report.episode_id}.crashed").read_text())
            running = float((MARKS / f"{report.episode_id}.running").read_text())
            samples.append((running - died) * 1000)
    print(
        f"restart after a host actor's death: {', '.join(f'{s:.0f}' for s in samples)} ms",
        file=sys.stderr,
    )
    return {"restart_ms": round(statistics.median(samples), 1)}


def memory_at_rest(tmp: Path, n: int = 10_000) -> dict[str, float]:
    """Resident memory of a host actor carrying ``n`` started agents, and of one carrying
    a single agent, in MB; and what each agent past the first adds, in KB."""
    out: dict[str, float] = {}
    with Store(f"sqlite:///{tmp / 'memory.db'}") as store:
        for size, key in ((1, "host_actor_rss_mb"), (n, "fleet_10k_rss_mb")):
            topology = swarm(size)
            host, episode = _host(topology, store)
            ray.get(host.actor.start.remote(episode, {name: {} for name in topology.agents()}))
            pid = ray.get(host.actor.pid.remote())
            out[key] = round(psutil.Process(pid).memory_info().rss / 1e6, 1)
            ray.kill(host.actor)
    added = (out["fleet_10k_rss_mb"] - out["host_actor_rss_mb"]) * 1000 / (n - 1)
    out["rss_per_agent_at_10k_kb"] = round(added, 1)
    print(
        f"host actor at rest: {out['host_actor_rss_mb']} MB with 1 agent, "
        f"{out['fleet_10k_rss_mb']} MB with {n} ({added:.1f} KB an agent)",
        file=sys.stderr,
    )
    return out


class Item(BaseModel):
    item: int


@tool(read_only=True)
def slow_lookup(args: Item, ctx: ToolContext) -> dict[str, Any]:
    """Stand in for a worker's model call: a quarter of a second of waiting."""
    time.sleep(0.25)
    return {"item": args.item}


def _look_up(request: Any) -> Any:
    import json

    task = json.loads(json.loads(request.messages[1].content)["task"])
    return call("slow_lookup", item=task["index"])


def fan_out(tmp: Path, items: int = 8, copies: int = 2) -> dict[str, float]:
    """A map-reduce of ``items`` over ``copies`` worker copies, each item a quarter of a
    second of waiting: copies on host actors of their own (lanes side by side) against
    the same copies sharing one host actor (in turn). Each fleet runs the episode once to
    start its hosts, then once measured."""
    from tether.runtime.launch import on_hosts
    from tether.runtime.supervisor import EpisodeReport
    from tether.topologies import map_reduce

    def fleet(isolated: bool) -> Topology:
        worker = Agent(
            "worker",
            Role("worker", (Grant("slow_lookup", tier="low"),)),
            ScriptedModel([_look_up, say("looked up")]),
            (slow_lookup,),
            isolated=isolated,
        )
        editor = Agent("editor", Role("editor"), ScriptedModel([say("reduced")]))
        return Topology("fan", map_reduce("fan", worker, editor, over="items", copies=copies))

    def twice(supervisor: RootSupervisor) -> EpisodeReport:
        task = {"items": list(range(items))}
        assert supervisor.start(task).status == "completed"  # starts the hosts
        began = time.perf_counter()
        report = supervisor.start(task)
        took[isolated] = time.perf_counter() - began
        return report

    took: dict[bool, float] = {}
    with Store(f"sqlite:///{tmp / 'fanout.db'}") as store:
        for isolated in (False, True):
            loaded = Loaded(fleet(isolated), {"kind": "python"})
            report = on_hosts(loaded, store, None, twice)  # the hosts `tether run` uses
            assert report.status == "completed", report
    print(
        f"map-reduce of {items} items (0.25 s each) over {copies} copies: "
        f"{took[False]:.2f} s on one shared host actor, {took[True]:.2f} s on host actors "
        "of their own",
        file=sys.stderr,
    )
    return {
        "fanout_side_by_side_ratio": round(took[False] / took[True], 3),
        "fanout_shared_s": round(took[False], 2),
        "fanout_isolated_s": round(took[True], 2),
    }


def measure(tmp: Path) -> dict[str, float]:
    ensure_ray()
    return {
        **start(tmp),
        **messages(tmp),
        **restarts(tmp),
        **memory_at_rest(tmp),
        **fan_out(tmp),
    }
