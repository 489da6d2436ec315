"""A fan-out over isolated worker copies runs side by side on Ray: each copy's host
actor is a lane of its own. The copies meet at a rendezvous that only work running at
the same time can reach (run in turn, the first would wait alone and give up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.memory import Store
from tether.memory.events import ActionExecuted, agent_stream_id
from tether.runtime.launch import run
from tether.runtime.reexecute import reexecute
from tether.topologies.loader import load_file

pytestmark = pytest.mark.ray

FLEET = """
import json
import os
import time
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Role, Topology, map_reduce


class Meet(BaseModel):
    item: str


@tool(read_only=True)
def meet(args: Meet, ctx: ToolContext) -> dict:
    '''Arrive at the rendezvous and wait there for the other copy (a minute at most).'''
    here = Path(ctx.context["rendezvous"])
    (here / ctx.agent).write_text(str(os.getpid()))
    for _ in range(600):
        if len(list(here.iterdir())) >= 2:
            return {"met": True, "pid": os.getpid()}
        time.sleep(0.1)
    return {"met": False, "pid": os.getpid()}


def research(request):
    item = json.loads(json.loads(request.messages[1].content)["task"])["item"]
    return call("meet", item=item)


def report(request):
    return say("met: " + request.messages[-1].content)


def reduce(request):
    note = json.loads(json.loads(request.messages[1].content)["note"])
    return say(json.dumps([r["answer"] for r in note["results"]]))


worker = Agent(
    "researcher",
    Role("researcher", (Grant("meet"),)),
    ScriptedModel([research, report]),
    (meet,),
    isolated=True,
)
editor = Agent("editor", Role("editor"), ScriptedModel([reduce]))
topology = Topology("side_by_side", map_reduce("survey", worker, editor, over="items", copies=2))
task = {"items": ["left", "right"]}
"""


def test_isolated_worker_copies_run_their_items_side_by_side(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "side_by_side.py"
    path.write_text(FLEET)
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    report = run(load_file(path), context={"rendezvous": str(rendezvous)}, db=sqlite_url)
    assert report.status == "completed", report.output
    answers = json.loads(report.output)
    assert len(answers) == 2 and all('"met": true' in a for a in answers)
    with Store(sqlite_url) as store:
        pids = {
            e.result["pid"]
            for name in ("researcher-1", "researcher-2")
            for e in store.read(agent_stream_id(report.episode_id, name))
            if isinstance(e, ActionExecuted) and e.result
        }
    assert len(pids) == 2  # each copy on a host actor of its own
    # The copies recorded side by side; re-execution, in turn, feeds each stream its own
    # recorded times and ids.
    with Store(sqlite_url) as store:
        result = reexecute(store, report.episode_id, load_file(path).topology)
    assert result.identical, result.divergence


CRASHY = """
import json
import os
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Restarts, Role, Topology, map_reduce


class Item(BaseModel):
    item: str


@tool(idempotent=True)
def publish(args: Item, ctx: ToolContext) -> dict:
    '''Publish an item; the host running item "b" dies the first time.'''
    flag = Path(ctx.context["flag"])
    if args.item == "b" and not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(9)
    return {"published": args.item, "pid": os.getpid()}


def work(request):
    item = json.loads(json.loads(request.messages[1].content)["task"])["item"]
    return call("publish", item=item)


worker = Agent(
    "worker",
    Role("worker", (Grant("publish", tier="low"),)),
    ScriptedModel([work, say("published")]),
    (publish,),
    isolated=True,
)
editor = Agent("editor", Role("editor"), ScriptedModel([say("all published")]))
topology = Topology(
    "crashy_fan_out",
    map_reduce(
        "fan", worker, editor, over="items", copies=2, restarts=Restarts(backoff_s=0)
    ),
)
task = {"items": ["a", "b", "c", "d"]}
"""


def test_a_worker_host_that_dies_mid_fan_out_is_replaced_and_its_item_goes_on(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    from tether.memory.events import AgentRestarted, EffectApplied, TaskAssigned

    path = tmp_path / "crashy.py"
    path.write_text(CRASHY)
    flag = tmp_path / "died"
    report = run(load_file(path), context={"flag": str(flag)}, db=sqlite_url)
    assert (report.status, report.output) == ("completed", "all published")
    with Store(sqlite_url) as store:
        restarted = [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
        effects = [e for _, e in store.of_type(EffectApplied)]
        given = {
            name: [
                json.loads(e.task["task"])["item"]
                for e in store.read(agent_stream_id(report.episode_id, name))
                if isinstance(e, TaskAssigned)
            ]
            for name in ("worker-1", "worker-2")
        }
    assert [(r.agent, r.strategy) for r in restarted] == [("worker-2", "host")]
    assert given == {"worker-1": ["a", "c"], "worker-2": ["b", "d"]}  # b given once
    assert sorted(e.result["published"] for e in effects) == ["a", "b", "c", "d"]
    assert flag.exists()


ASKING = """
import json
import time

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory import Store, SystemClock
from tether.runtime.inbox import Inbox
from tether.topologies import Agent, Grant, Role, Topology, map_reduce


class Item(BaseModel):
    item: str


@tool(idempotent=True)
def publish(args: Item, ctx: ToolContext) -> dict:
    '''Publish an item (a person signs each off).'''
    return {"published": args.item}


def asked(db, name):
    '''Whether the inbox holds a request to publish item ``name``.'''
    with Store(db) as store:
        requests = Inbox(store, SystemClock()).items()
    return any(r.request.arguments.get("item") == name for r in requests)


def work(request):
    item = json.loads(json.loads(request.messages[1].content)["task"])["item"]
    if item["name"] == "a":
        # The first copy asks second: it waits until the other's request is on record
        # (a minute at most; past it this copy fails, and so does the test).
        deadline = time.monotonic() + 60
        while not asked(item["db"], "b"):
            if time.monotonic() > deadline:
                raise AssertionError("item b's approval request never reached the inbox")
            time.sleep(0.05)
    return call("publish", item=item["name"])


worker = Agent(
    "worker",
    Role("worker", (Grant("publish", tier="high"),)),
    ScriptedModel([work, say("published")]),
    (publish,),
    isolated=True,
)
editor = Agent("editor", Role("editor"), ScriptedModel([say("both published")]))
topology = Topology("asking", map_reduce("fan", worker, editor, over="items", copies=2))
"""


def test_work_recorded_side_by_side_re_executes_in_turn(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    from tether.memory import SystemClock
    from tether.memory.events import ApprovalAwaited
    from tether.runtime.inbox import Inbox
    from tether.runtime.launch import resume

    path = tmp_path / "asking.py"
    path.write_text(ASKING)
    items = [{"name": n, "db": sqlite_url} for n in ("a", "b")]
    report = run(load_file(path), {"items": items}, db=sqlite_url)
    assert report.status == "waiting" and len(report.waiting) == 2
    with Store(sqlite_url) as store:
        # The second copy asked first: the run drew its approval id first.
        asked = sorted(
            (n, e.originator_id)
            for name in ("worker-1", "worker-2")
            for n, e in store.read_streams([agent_stream_id(report.episode_id, name)])
            if isinstance(e, ApprovalAwaited)
        )
        assert [s for _, s in asked] == [
            agent_stream_id(report.episode_id, "worker-2"),
            agent_stream_id(report.episode_id, "worker-1"),
        ]
        inbox = Inbox(store, SystemClock())
        for approval in report.waiting:
            inbox.approve(approval, "alice", "fine")
    done = resume(report.episode_id, db=sqlite_url)
    assert (done.status, done.output) == ("completed", "both published")
    with Store(sqlite_url) as store:
        result = reexecute(store, report.episode_id, load_file(path).topology)
    assert result.identical, result.divergence
