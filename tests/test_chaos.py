"""Chaos: a multi-agent episode whose host actor, or whose driver, is killed with -9 at a
random action. After recovery (the supervisor replacing the host, or `tether resume`)
every episode ends completed, its streams have no gap or duplicate, and the effects ledger
and the world show each idempotency key once.

20 trials here; `make chaos` runs 100 (TETHER_CHAOS_TRIALS).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.memory import Store, list_episodes
from tether.memory.events import AgentRestarted, EffectApplied, agent_stream_id
from tether.runtime.cli import app

TRIALS = int(os.environ.get("TETHER_CHAOS_TRIALS", "20"))
ROOT = Path(__file__).resolve().parent.parent

FLEET = """
import os
import time
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Budget, Grant, Restarts, Role, Supervisor, Topology


class Entry(BaseModel):
    line: str


@tool(idempotent=True)
def write_ledger(args: Entry, ctx: ToolContext) -> dict:
    '''Write a line to the world, once per idempotency key; die where the trial says.'''
    world = Path(ctx.context["world"])
    lines = world.read_text().splitlines() if world.exists() else []
    if ctx.idempotency_key not in lines:
        with world.open("a") as f:
            f.write(ctx.idempotency_key + "\\n")
    count = Path(ctx.context["count"])
    n = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(n))
    if n == ctx.context["crash_at"]:
        if ctx.context["mode"] == "host":
            os._exit(9)  # the host actor dies in the middle of the action
        Path(ctx.context["signal"]).write_text("kill the driver now")
        time.sleep(120)  # the driver is killed meanwhile
    return {"written": args.line}


def worker(name, lines, handoff=None):
    script = [call("write_ledger", line=f"{name} {i}") for i in range(lines)]
    script.append(call("handoff", to=handoff, reason="next") if handoff else say("done"))
    return Agent(
        name,
        Role(name, (Grant("write_ledger", tier="low"),)),
        ScriptedModel(script),
        (write_ledger,),
        handoffs=(handoff,) if handoff else (),
        budget=Budget(steps=10),
    )


topology = Topology(
    "chaos",
    Supervisor(
        "root",
        (worker("first", 3, "second"), worker("second", 3)),
        budget=Budget(steps=30),
        restarts=Restarts(backoff_s=0, max_restarts=5),
    ),
)
task = {"work": "six lines"}
"""


def tether(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def check(db: str, world: Path, mode: str) -> None:
    """The invariants every trial must end with."""
    with Store(db) as store:
        [summary] = list_episodes(store)
        assert summary.status == "completed", summary
        restarts = [e for e in store.read(summary.episode_id) if isinstance(e, AgentRestarted)]
        if mode == "host":  # the supervisor replaced the dead host, counting a restart
            [restart] = restarts
            assert restart.strategy == "host" and "died while running" in restart.reason
        for name in ("first", "second"):
            stream = store.read(agent_stream_id(summary.episode_id, name))
            versions = [e.originator_version for e in stream]
            assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
        keys = [e.key for _, e in store.of_type(EffectApplied)]
    assert len(keys) == len(set(keys)) == 6  # the ledger holds each key once
    assert sorted(world.read_text().splitlines()) == sorted(keys)  # and so does the world


@pytest.mark.parametrize("trial", range(TRIALS))
def test_an_episode_survives_a_kill_at_a_random_action(
    ray_session: None, tmp_path: Path, trial: int
) -> None:
    import ray

    from tether.runtime.launch import run
    from tether.topologies import load_file

    chance = random.Random(trial)
    mode = "driver" if trial % 5 == 4 else "host"  # one trial in five kills the driver
    crash_at = chance.randint(1, 6)
    fleet, world = tmp_path / "fleet.py", tmp_path / "world.txt"
    context = {
        "world": str(world),
        "count": str(tmp_path / "count"),
        "signal": str(tmp_path / "signal"),
        "crash_at": crash_at,
        "mode": mode,
    }
    fleet.write_text(FLEET + f"\ncontext = {json.dumps(context)}\n")
    db = f"sqlite:///{tmp_path / 'chaos.db'}"
    if mode == "host":
        report = run(load_file(fleet), db=db)
        assert report.status == "completed", report
    else:
        address = ray.get_runtime_context().gcs_address
        driver = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "tether"),
                "run",
                str(fleet),
                "--db",
                db,
                "--address",
                address,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 90
            while not (tmp_path / "signal").exists():
                assert driver.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
        with Store(db) as store:
            [summary] = list_episodes(store)
        tether("resume", str(summary.episode_id), "--db", db, "--address", address)
    check(db, world, mode)
