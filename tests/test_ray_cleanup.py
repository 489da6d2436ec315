"""A ``tether run`` killed with -9 leaves no Ray process behind: not the raylet, not the
GCS, not the agents the raylet started (DashboardAgent, RuntimeEnvAgent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent

HOLDING = """
import time
from pathlib import Path
from pydantic import BaseModel
from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Role, Supervisor, Topology

class Nothing(BaseModel):
    pass

@tool(read_only=True)
def hold(args: Nothing, ctx: ToolContext) -> dict[str, str]:
    '''Wait until the test lets go.'''
    Path(ctx.context["started"]).touch()
    while not Path(ctx.context["go"]).exists():
        time.sleep(0.05)
    return {"held": "yes"}

topology = Topology('one', Supervisor('root', (Agent('a', Role('a', (Grant('hold'),)),
    ScriptedModel([call('hold'), say('hi')]), tools=(hold,)),)))
"""
"""The smallest topology (one agent) with a tool that waits for a file: mid-run on demand."""


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for its reaper has stopped)."""
    found = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path: Path, sqlite_url: str) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    fleet = tmp_path / "holding.py"
    fleet.write_text(
        HOLDING + f"context = {json.dumps({'started': str(started), 'go': str(go)})}\n"
    )
    driver = subprocess.Popen(
        [str(BIN / "tether"), "run", str(fleet), "--db", sqlite_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ,
    )
    ray: list[psutil.Process] = []
    try:
        # The fleet runs on a local Ray the driver started, and its agent is mid-action.
        deadline = time.monotonic() + 120
        while not started.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), "the agent never reached its action"
        # Everything the driver started, found by its process tree (never the test
        # session's own Ray): the GCS, the raylet, the agents and workers under it.
        ray = psutil.Process(driver.pid).children(recursive=True)
        names = " ".join(p.name() for p in ray)
        assert "raylet" in names and "DashboardAgent" in names and "RuntimeEnvAgent" in names
        # kill -9: no atexit, no ray.shutdown.
        driver.kill()
        driver.wait(timeout=30)
        # Ray's own fate-sharing, and tether's, have a minute to stop all of it.
        deadline = time.monotonic() + 60
        while alive(ray) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [f"{p.pid} {p.name()}" for p in alive(ray)]
        assert left == [], f"still running after the driver was killed: {left}"
    finally:
        go.touch()
        driver.kill()
        for p in alive(ray):
            p.kill()
