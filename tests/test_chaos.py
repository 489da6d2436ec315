"""Chaos: a multi-agent episode whose host actor, or whose driver, is killed with -9 at a
random tool call, before or after its effect. Its three agents call an idempotent tool,
a tool that can reconcile, and one that can do neither. After recovery (the supervisor
replacing the host, or `tether resume`, and a person answering what a crash left
uncertain) every episode ends completed, its streams have no gap or duplicate, no effect
happened twice in the world, and every attempt the world saw is on record.

20 trials here; `make chaos` runs 100 (TETHER_CHAOS_TRIALS).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.memory import Store, SystemClock, list_episodes
from tether.memory.events import (
    AgentRestarted,
    EffectApplied,
    ExecutionStarted,
    agent_stream_id,
)
from tether.runtime.cli import app
from tether.runtime.escalation import Escalations

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


def world_lines(ctx):
    world = Path(ctx.context["world"])
    return world.read_text().splitlines() if world.exists() else []


def note(ctx, line):
    with Path(ctx.context["world"]).open("a") as f:
        f.write(line + "\\n")


def die(ctx):
    if ctx.context["mode"] == "host":
        os._exit(9)  # the host actor dies in the middle of the action
    Path(ctx.context["signal"]).write_text("kill the driver now")
    time.sleep(120)  # the driver is killed meanwhile


def attempt(name, ctx, once):
    # Every call is an attempt in the world; the trial's crash comes before or after the
    # effect of its n-th call.
    note(ctx, f"attempt {name} {ctx.idempotency_key}")
    count = Path(ctx.context["count"])
    n = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(n))
    crash = n == ctx.context["crash_at"]
    if crash and ctx.context["before"]:
        die(ctx)
    if not once or f"effect {name} {ctx.idempotency_key}" not in world_lines(ctx):
        note(ctx, f"effect {name} {ctx.idempotency_key}")
    if crash:
        die(ctx)
    return {"done": name}


@tool(idempotent=True)
def write_ledger(args: Entry, ctx: ToolContext) -> dict:
    '''Write a line to the world, once per idempotency key (it dedupes by the key).'''
    return attempt("write_ledger", ctx, once=True)


def paid(args: Entry, ctx: ToolContext):
    '''Ask the world whether the payment under this key happened.'''
    if f"effect pay {ctx.idempotency_key}" in world_lines(ctx):
        return {"done": "pay"}
    return None


@tool(destructive=True, reconcile=paid)
def pay(args: Entry, ctx: ToolContext) -> dict:
    '''Pay: not idempotent, but the bank can be asked whether a key was paid.'''
    return attempt("pay", ctx, once=False)


@tool(destructive=True)
def notify(args: Entry, ctx: ToolContext) -> dict:
    '''Notify someone: not idempotent, and nobody can be asked.'''
    return attempt("notify", ctx, once=False)


def worker(name, tool_fn, handoff=None):
    script = [call(tool_fn.name, line=f"{name} {i}") for i in range(2)]
    script.append(call("handoff", to=handoff, reason="next") if handoff else say("done"))
    return Agent(
        name,
        Role(name, (Grant(tool_fn.name, tier="low"),)),
        ScriptedModel(script),
        (tool_fn,),
        handoffs=(handoff,) if handoff else (),
        budget=Budget(steps=10),
    )


topology = Topology(
    "chaos",
    Supervisor(
        "root",
        (
            worker("first", write_ledger, "second"),
            worker("second", pay, "third"),
            worker("third", notify),
        ),
        budget=Budget(steps=30),
        restarts=Restarts(backoff_s=0, max_restarts=5),
    ),
)
task = {"work": "six calls"}
"""


def tether(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def check(db: str, world: Path, mode: str) -> None:
    """The invariants every trial must end with."""
    lines = [line.split() for line in world.read_text().splitlines()]
    attempts = Counter(key for kind, _, key in lines if kind == "attempt")
    effects = Counter(key for kind, _, key in lines if kind == "effect")
    with Store(db) as store:
        [summary] = list_episodes(store)
        assert summary.status == "completed", summary
        restarts = [e for e in store.read(summary.episode_id) if isinstance(e, AgentRestarted)]
        if mode == "host":  # the supervisor replaced the dead host, counting a restart
            [restart] = restarts
            assert restart.strategy == "host" and "died while running" in restart.reason
        started: Counter[str] = Counter()
        for name in ("first", "second", "third"):
            stream = store.read(agent_stream_id(summary.episode_id, name))
            versions = [e.originator_version for e in stream]
            assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
            started.update(
                e.effect_key for e in stream if isinstance(e, ExecutionStarted) and e.effect_key
            )
        ledger = [e.key for _, e in store.of_type(EffectApplied)]
    # No effect happened twice, whatever the tool; every run of a tool is on record as an
    # attempt (an idempotent tool's re-runs included), and nothing ran that is not.
    assert all(n == 1 for n in effects.values()), effects
    assert attempts == started, (attempts, started)
    # The ledger holds each effect that happened once, and only those.
    assert len(ledger) == len(set(ledger))
    assert sorted(ledger) == sorted(effects)


def decide_as_a_person(db: str, world: Path) -> None:
    """Answer every question about a side effect a crash left uncertain, as a person
    would: by looking in the world for it."""
    with Store(db) as store:
        asked = Escalations(store, SystemClock()).items()
    effects = {
        line.split()[2] for line in world.read_text().splitlines() if line.startswith("effect")
    }
    for x in asked:
        assert "done" in x.request.options, x.request.reason  # only what a crash left uncertain
        key = str(x.request.partial["idempotency_key"])
        found = "--done" if key in effects else "--not-done"
        tether("inbox", "resolve", str(x.id), found, "--as", "chaos", "--db", db)


def finish(db: str, world: Path, address: str) -> None:
    """Resume the episode until it completes, answering what it asks a person meanwhile."""
    for _ in range(3):
        with Store(db) as store:
            [summary] = list_episodes(store)
        if summary.status == "completed":
            return
        decide_as_a_person(db, world)
        tether("resume", str(summary.episode_id), "--db", db, "--address", address)


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
        "before": chance.random() < 0.5,  # the crash comes before the effect, or after it
        "mode": mode,
    }
    fleet.write_text(FLEET + f"\ncontext = {context!r}\n")
    db = f"sqlite:///{tmp_path / 'chaos.db'}"
    address = ray.get_runtime_context().gcs_address
    if mode == "host":
        report = run(load_file(fleet), db=db)
        assert report.status in ("completed", "waiting"), report
    else:
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
    finish(db, world, address)
    check(db, world, mode)
