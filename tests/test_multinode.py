"""Multi-node: a Ray head and a second node on this machine, the store on PostgreSQL. An
isolated agent runs on the second node; its processes are killed in the middle of its
action; the episode completes on the head, the action's effect once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tether.memory import Store, list_episodes
from tether.memory.events import ActionExecuted, AgentRestarted, EffectApplied, agent_stream_id

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
HEAD_PORT, NODE2_PORT = 6390, 6391

FLEET = """
import json
import os
import time
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Restarts, Role, Supervisor, Topology


class Nothing(BaseModel):
    pass


@tool(idempotent=True)
def work(args: Nothing, ctx: ToolContext) -> dict:
    '''Note this process, then wait until the test lets it go on.'''
    seen = Path(ctx.context["seen"])
    seen.mkdir(exist_ok=True)
    (seen / str(os.getpid())).write_text(ctx.agent)
    go = Path(ctx.context["go"]) / ctx.agent
    for _ in range(1200):
        if go.exists():
            break
        time.sleep(0.05)
    return {"pid": os.getpid()}


def agent(name, **kw):
    last = call("handoff", to="far", reason="yours") if name == "near" else say("done")
    script = [call("work"), last]
    return Agent(
        name,
        Role(name, (Grant("work", tier="low"),)),
        ScriptedModel(script),
        (work,),
        handoffs=("far",) if name == "near" else (),
        **kw,
    )


topology = Topology(
    "spread",
    Supervisor(
        "root",
        (agent("near"), agent("far", isolated=True, node="node2")),
        restarts=Restarts(backoff_s=0),
    ),
)
task = {"go": True}
"""


def _ray(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "ray"), *args], env=env, check=True, timeout=180, capture_output=True)


def _tree(match: str) -> list[psutil.Process]:
    """Processes whose command line holds ``match``, with all their descendants."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if match in " ".join(p.info["cmdline"] or []):
                for q in [p, *p.children(recursive=True)]:
                    found[q.pid] = q
        except psutil.Error:
            continue
    return list(found.values())


def _kill(processes: list[psutil.Process]) -> None:
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A head and a second node (custom resource ``node2``), both with token auth (the
    driver too); stopped by killing exactly their processes, never the session's Ray."""
    temp = f"/tmp/ray-mn-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = f"--temp-dir={temp}"
    node2 = f"--node_manager_port={NODE2_PORT}"
    try:
        _ray(
            "start",
            "--head",
            f"--port={HEAD_PORT}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            head,
            env=env,
        )
        _ray(
            "start",
            f"--address=127.0.0.1:{HEAD_PORT}",
            "--num-cpus=1",
            f"--node-manager-port={NODE2_PORT}",
            '--resources={"node2": 1}',
            "--disable-usage-stats",
            env=env,
        )
        yield {**env, "TETHER_NODE2": node2, "TETHER_HEAD": head}
    finally:
        _kill(_tree(node2))
        _kill(_tree(temp))


def test_an_episode_completes_on_the_head_after_the_second_node_dies(
    cluster: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    seen, go = tmp_path / "seen", tmp_path / "go"
    go.mkdir()
    path = tmp_path / "spread.py"
    path.write_text(FLEET + f"context = {json.dumps({'seen': str(seen), 'go': str(go)})}\n")
    node2 = {p.pid for p in _tree(cluster["TETHER_NODE2"])}
    driver = subprocess.Popen(
        [
            str(BIN / "tether"),
            "run",
            str(path),
            "--address",
            f"127.0.0.1:{HEAD_PORT}",
            "--db",
            postgres_url,
        ],
        env=cluster,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # "near" runs on the shared host and is let go at once; "far" then starts on the
        # second node, where it waits in its action until the node is gone.
        far: int | None = None
        deadline = time.monotonic() + 120
        while far is None and time.monotonic() < deadline and driver.poll() is None:
            for f in seen.glob("*") if seen.exists() else []:
                if f.read_text() == "near":
                    (go / "near").touch()
                elif f.read_text() == "far":
                    far = int(f.name)
            time.sleep(0.1)
        assert far is not None, "the isolated agent never started"
        assert far in {p.pid for p in _tree(cluster["TETHER_NODE2"])}, "it is not on node2"
        _kill(_tree(cluster["TETHER_NODE2"]))  # the second node dies mid-action
        (go / "far").touch()  # its next attempt, on the head, goes on at once
        out, _ = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 0, out
    assert "spread: completed" in out, out
    with Store(postgres_url) as store:
        [episode] = list_episodes(store)
        events = store.read(agent_stream_id(episode.episode_id, "far"))
        restarted = [e for e in store.read(episode.episode_id) if isinstance(e, AgentRestarted)]
        effects = [e for _, e in store.of_type(EffectApplied) if e.agent == "far"]
    assert [(r.agent, r.strategy) for r in restarted] == [("far", "host")], [
        r.reason for r in restarted
    ]
    [executed] = [e for e in events if isinstance(e, ActionExecuted) and e.result]
    assert executed.result is not None
    assert executed.result["pid"] != far and executed.result["pid"] not in node2  # on the head
    assert len(effects) == 1  # the action cut short ran again under its key, once
