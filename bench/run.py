"""tether's benchmark: ratios against baselines measured in the same run.

The last line of stdout is one JSON object:

- ``gate_step_us``: median in-process time of one governed no-op action (all seven
  stages, recorded to SQLite), in microseconds.
- ``gate_vs_ray_call``: median time of one governed no-op action executed in a host actor,
  divided by the median of a bare call to the same actor with the same payload.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolCall, ToolContext, say, tool
from tether.memory import SequentialIds, StepClock, Store, SystemClock
from tether.memory.sources import RandomIds
from tether.runtime.host import Host
from tether.runtime.supervisor import LocalHost, RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology
from tether.topologies.loader import Loaded

PAYLOAD = "x" * 256


class Payload(BaseModel):
    payload: str = ""


@tool(read_only=True)
def noop(args: Payload, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing."""
    return {}


TOPOLOGY = Topology(
    name="bench",
    root=Supervisor(
        name="root",
        children=(
            Agent(
                name="bench",
                role=Role("bench", grants=(Grant("noop"),)),
                model=ScriptedModel([say("idle")]),
                tools=(noop,),
            ),
        ),
    ),
)
CALL = ToolCall("noop", {"payload": PAYLOAD}, id="bench")


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def gate_in_process(db: Path, n: int) -> float:
    """Median µs of one governed no-op through the gate, recorded to SQLite."""
    with Store(f"sqlite:///{db}") as store:
        clock, ids = SystemClock(), SequentialIds()
        host = Host(TOPOLOGY, store, clock, ids)
        episode = (
            RootSupervisor(TOPOLOGY, store, LocalHost(host), StepClock(), ids)
            .start({}, {})
            .episode_id
        )
        for _ in range(50):
            host.act(episode, "bench", CALL)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = host.act(episode, "bench", CALL)
            samples.append(time.perf_counter() - t0)
            assert result.outcome == "executed", result
    return _median_us(samples)


def gate_on_ray(db: Path, n: int) -> tuple[float, float]:
    """(governed µs, bare µs): medians of calls to one host actor, interleaved."""
    import ray

    from tether.runtime.actor import ensure_ray, spawn_host
    from tether.runtime.supervisor import RayHost

    ensure_ray()
    with Store(f"sqlite:///{db}") as store:
        actor = spawn_host(Loaded(TOPOLOGY, {"kind": "python", "name": "bench"}), store.url)
        try:
            episode = (
                RootSupervisor(TOPOLOGY, store, RayHost(actor), SystemClock(), RandomIds())
                .start({}, {})
                .episode_id
            )
            for _ in range(50):
                ray.get(actor.act.remote(episode, "bench", CALL))
                ray.get(actor.echo.remote(episode, "bench", CALL))
            governed: list[float] = []
            bare: list[float] = []
            for _ in range(n):  # alternate call by call, so the machine's drift hits both alike
                for method, samples in ((actor.act, governed), (actor.echo, bare)):
                    t0 = time.perf_counter()
                    ray.get(method.remote(episode, "bench", CALL))
                    samples.append(time.perf_counter() - t0)
        finally:
            ray.kill(actor)
    return _median_us(governed), _median_us(bare)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        step_us = gate_in_process(Path(tmp) / "inproc.db", 2000)
        print(f"governed no-op in process (SQLite): {step_us:.0f} µs", file=sys.stderr)
        governed_us, bare_us = gate_on_ray(Path(tmp) / "ray.db", 2000)
        print(
            f"governed no-op in a host actor: {governed_us:.0f} µs; bare actor call: "
            f"{bare_us:.0f} µs",
            file=sys.stderr,
        )
    result = {
        "gate_step_us": round(step_us, 1),
        "gate_vs_ray_call": round(governed_us / bare_us, 3),
        "governed_ray_call_us": round(governed_us, 1),
        "bare_ray_call_us": round(bare_us, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
