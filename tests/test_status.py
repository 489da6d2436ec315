"""tether status: the fleet's tree folded from the store, budgets used and left, the
approvals each agent waits for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import call, say
from tether.memory import SequentialIds, StepClock, Store
from tether.runtime.cli import app
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.status import fleet_status
from tether.runtime.supervisor import LocalHost, RootSupervisor
from tether.topologies import load_file

from .test_gate import Run, threshold_fleet


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def test_a_waiting_episode_shows_what_it_used_holds_and_waits_for(store: Store) -> None:
    topology = threshold_fleet(
        [
            call("pay", to="a@x.test", amount="10"),
            call("pay", to="a@x.test", amount="120"),
            say("paid"),
        ]
    )
    run = Run(store, topology)
    [item] = Inbox(store, run.clock).items("pending")
    [episode] = fleet_status(store)
    assert (episode.episode_id, episode.status) == (run.episode, "waiting")
    [clerk] = episode.agents
    assert (clerk.state, clerk.waiting) == ("waiting", (str(item.id),))
    assert (clerk.steps.used, clerk.steps.reserved) == (1, 1)
    assert episode.limits_known is False  # built in Python: no file to load the limits from
    result = CliRunner().invoke(app, ["status", "--json", "--db", store.url])
    assert result.exit_code == 0
    [shown] = json.loads(result.output)
    assert shown["agents"][0]["waiting"] == [str(item.id)]
    # Once it finishes, status shows it only with --all.
    Inbox(store, run.clock).approve(item.id, "alice", "ok")
    run.resume()
    assert fleet_status(store) == []
    assert [e.status for e in fleet_status(store, finished=True)] == ["completed"]


def test_limits_come_from_the_topology_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'status.db'}"
    fleet = tmp_path / "fleet.py"
    fleet.write_text(
        "from decimal import Decimal\n"
        "from tether.agents import ScriptedModel, call, say\n"
        "from tether.topologies import Agent, ApprovalThreshold, Budget, Grant, Role, "
        "Supervisor, Topology\n"
        "from tests.test_gate import pay\n"
        "grant = Grant('pay', tier='low', approval=ApprovalThreshold('amount', Decimal('100')))\n"
        "clerk = Agent('clerk', Role('clerk', (grant,)), ScriptedModel([call('pay', "
        "to='a@x.test', amount='500'), say('ok')]), (pay,), budget=Budget(steps=4, tokens=900))\n"
        "topology = Topology('payables', Supervisor('root', (clerk,), "
        "budget=Budget(steps=10, tokens=1000)))\n"
        "task = {'pay': 'invoice'}\n"
    )
    loaded = load_file(fleet)
    clock, ids = StepClock(), SequentialIds()
    with Store(db) as store:
        host = Host(loaded.topology, store, clock, ids)
        RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids).start(
            {"pay": "invoice"}, {}, source=loaded.source
        )
    result = CliRunner().invoke(app, ["status", "--db", db])
    assert result.exit_code == 0, result.output
    assert "root: steps 0 used, 1 held by open actions, 9 left of 10; tokens 0 used, 1000 " in (
        result.output
    )
    assert "clerk · waiting · steps 0 used, 1 held by open actions, 3 left of 4" in result.output
    # A watch loads each topology file once, however often it redraws.
    topologies: dict[str, Any] = {}
    with Store(db) as store:
        fleet_status(store, topologies=topologies)
        [first] = topologies.values()
        fleet_status(store, topologies=topologies)
        assert list(topologies.values()) == [first] and first is not None
    bad = CliRunner().invoke(app, ["status", "--watch", "0", "--db", db])
    assert bad.exit_code == 1 and "--watch 0" in bad.output


def test_the_progress_line_follows_the_episode_from_the_store(sqlite_url: str) -> None:
    from tether.runtime.cli import Progress

    with Store(sqlite_url) as store:
        script = [call("pay", to="a@x.test", amount="10"), call("pay", to="a@x.test", amount="120")]
        run = Run(store, threshold_fleet([*script, say("paid")]))
        progress = Progress("running", sqlite_url)
        assert progress.line(store).startswith("running… ")
        progress.follow(run.episode)
        line = progress.line(store)
    assert line.startswith("running: ")
    assert " · 1 allowed, 0 denied, 1 waiting · 2 model turns · " in line
