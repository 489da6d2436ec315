"""tether status: the fleet's tree folded from the store, budgets used and left, the
approvals each agent waits for."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import call, say
from tether.memory import SequentialIds, StepClock, Store
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.status import fleet_status
from tether.runtime.supervisor import RootSupervisor
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
    from tether.runtime.cli._render import Progress

    with Store(sqlite_url) as store:
        script = [call("pay", to="a@x.test", amount="10"), call("pay", to="a@x.test", amount="120")]
        run = Run(store, threshold_fleet([*script, say("paid")]))
        progress = Progress("running", sqlite_url)
        assert progress.line(store).startswith("running… ")
        progress.follow(run.episode)
        line = progress.line(store)
    assert line.startswith("running: ")
    assert " · 1 allowed, 0 denied, 1 waiting · 2 model turns · " in line


def test_status_with_nothing_running_shows_the_latest_episodes(store: Store) -> None:
    # A new store: status says nothing ran yet, and how to run something.
    empty = CliRunner().invoke(app, ["status", "--db", store.url])
    assert empty.exit_code == 0, empty.output
    assert "no episode is running or waiting, and none was run yet" in empty.output
    assert "run FILE" in empty.output
    # An episode finishes: status, with nothing running, lists it and says how to see more.
    run = Run(store, threshold_fleet([call("pay", to="a@x.test", amount="10"), say("paid")]))
    assert fleet_status(store) == []
    result = CliRunner().invoke(app, ["status", "--db", store.url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "no episode is running or waiting; the latest 1:"
    assert lines[1].startswith(f"  {run.episode} · ") and " · completed: " in lines[1]
    assert "episodes" in lines[2] and "status --all" in lines[2]


def test_watch_off_a_terminal_prints_each_change_as_plain_lines(store: Store) -> None:
    import queue
    import signal
    import subprocess
    import sys
    import threading

    topology = threshold_fleet([call("pay", to="a@x.test", amount="120"), say("paid")])
    run = Run(store, topology)
    [item] = Inbox(store, run.clock).items("pending")
    # The watch writes to a pipe, as to a log file or `| grep`.
    watch = subprocess.Popen(
        [str(Path(sys.executable).parent / "tether"), "status", "--watch", "0.2"],
        env={**os.environ, "TETHER_DB": store.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def until(text: str) -> list[str]:
        """The lines printed up to the one holding ``text`` (a minute at most)."""
        seen = []
        while not seen or text not in seen[-1]:
            seen.append(lines.get(timeout=60))
        return seen

    try:
        # The waiting episode is printed at once, while the watch goes on.
        first = until("waits for")
        assert first[0].startswith("status at ")
        assert f"{run.episode} · t · waiting" in "".join(first)
        # It is approved and finishes: the change is printed as it happens.
        Inbox(store, run.clock).approve(item.id, "alice", "ok")
        run.resume()
        second = until("no episode is running or waiting")
        assert second[0].startswith("status at ")
    finally:
        watch.send_signal(signal.SIGINT)
        rest, _ = watch.communicate(timeout=30)
    assert watch.returncode == 0, rest
    # Plain lines: no cursor movement, no colour, no redraw.
    assert "\x1b" not in "".join(first + second) + rest


def test_a_topology_file_broken_since_its_episode_began_is_named_with_its_error(
    tmp_path: Path,
) -> None:
    # An episode starts from a file, waiting for approval; then someone breaks the file.
    db = f"sqlite:///{tmp_path / 'status.db'}"
    fleet = tmp_path / "fleet.py"
    fleet.write_text(
        "from tether.agents import ScriptedModel, call, say\n"
        "from tether.topologies import Agent, Grant, Role, Supervisor, Topology\n"
        "from tests.test_gate import pay\n"
        "clerk = Agent('clerk', Role('clerk', (Grant('pay', tier='high'),)), "
        "ScriptedModel([call('pay', to='a@x.test', amount='5'), say('ok')]), (pay,))\n"
        "topology = Topology('payables', Supervisor('root', (clerk,)))\n"
    )
    loaded = load_file(fleet)
    clock, ids = StepClock(), SequentialIds()
    with Store(db) as store:
        host = Host(loaded.topology, store, clock, ids)
        RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids).start(
            {}, {}, source=loaded.source
        )
    fleet.write_text("topology = (\n")
    # Status still shows the episode, and one line says which file failed and why.
    result = CliRunner().invoke(app, ["status", "--db", db])
    assert result.exit_code == 0, result.output
    assert "clerk · waiting" in result.output
    [note] = [line for line in result.output.splitlines() if "note:" in line]
    assert f"topology file {fleet} could not be loaded again" in note
    assert "line 1: SyntaxError" in note
    shown = CliRunner().invoke(app, ["status", "--json", "--db", db])
    [episode] = json.loads(shown.output)
    assert episode["limits_known"] is False and episode["note"] in note
