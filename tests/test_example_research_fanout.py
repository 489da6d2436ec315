"""The research fan-out example: questions spread over two researcher copies, every
answer and every failed question reach the writer, the critic sends the draft back once,
and re-executing the episode runs the researchers again to the same record."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tether.memory import Store
from tether.memory.events import AgentHandedOff, TaskAssigned, agent_stream_id
from tether.memory.sources import SequentialIds, StepClock
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import load_file

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research_fanout.py"


def test_the_report_has_every_finding_with_its_source_and_the_open_question(
    sqlite_url: str,
) -> None:
    loaded = load_file(EXAMPLE)
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds()
        host = Host(loaded.topology, store, clock, ids)
        supervisor = RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids)
        report = supervisor.start(loaded.task or {}, loaded.context, loaded.source)
        assert report.status == "completed", report.output
        assert report.agent == "critic"
        assert "Frankfurt and Dublin. [source: infra-map#eu]" in report.output
        assert "[source: ops-handbook#cold-start]" in report.output
        assert "Open questions:\n- What does an hour of GPU time cost?" in report.output
        assert "the answer cites no source" in report.output

        def stream(name: str) -> list[object]:
            return list(store.read(agent_stream_id(report.episode_id, name)))

        # The split step gave the questions out in turn: two to the first copy.
        given = {
            name: [
                json.loads(e.task["task"])["index"]
                for e in stream(name)
                if isinstance(e, TaskAssigned)
            ]
            for name in ("researcher-1", "researcher-2")
        }
        assert given == {"researcher-1": [0, 2], "researcher-2": [1]}
        [first_draft] = [e for e in stream("writer") if isinstance(e, TaskAssigned)][:1]
        note = json.loads(first_draft.task["note"])
        assert [r["index"] for r in note["results"]] == [0, 1]
        assert [(f["index"], f["by"]) for f in note["failed"]] == [(2, "researcher-1")]
        sent_back = [e.reason for e in stream("critic") if isinstance(e, AgentHandedOff)]
        assert sent_back == ["name the questions the research left open"]
        result = reexecute(store, report.episode_id, loaded.topology)
        assert result.identical, result.divergence
        assert result.fed_back["model_turns"] >= 8  # the researchers' turns among them
    # A citation in brackets is shown as written, not taken for terminal markup.
    for command in (["episodes", "--db", sqlite_url], ["replay", str(report.episode_id)]):
        if command[0] == "replay":
            command += ["--db", sqlite_url]
        shown = CliRunner().invoke(app, command, terminal_width=400)
        assert shown.exit_code == 0, shown.output
        assert "[source: infra-map#eu]" in shown.output, command
