"""What the CLI reads from people and prints for them: a task from a file, text in any
language as its characters, erased facts as erased, counts with the right noun."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.memory import RandomIds, SequentialIds, StepClock, Store, SystemClock
from tether.runtime import launch
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies import demo
from tether.topologies.loader import Loaded

from .conftest import ONE_AGENT_FILE
from .test_forgetting import refund_desk

NOTE_FILE = '''
import json

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Role, Supervisor, Topology


class Note(BaseModel):
    text: str


@tool()
def note(args: Note, ctx: ToolContext) -> dict[str, str]:
    """Write a note."""
    return {"noted": args.text}


def the_question(request):
    task = json.loads(next(m.content for m in request.messages if m.role == "user"))
    return call("note", text=task["question"])


clerk = Agent(
    "clerk",
    Role("clerk", grants=(Grant("note", tier="low"),)),
    ScriptedModel([the_question, say("noted")]),
    tools=(note,),
)
topology = Topology("notes", Supervisor("root", (clerk,)))
task = {"question": "the default"}
'''
"""A clerk who notes the question it is given, in a tool argument named ``text``."""


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tether run` without Ray: the same supervisor, its agents on a host in this process."""

    def run(
        loaded: Loaded, task: dict[str, Any] | None = None, *, db: str | None, **_: Any
    ) -> EpisodeReport:
        with Store(db) as store:
            clock, ids = SystemClock(), RandomIds()
            host = Host(loaded.topology, store, clock, ids)
            supervisor = RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids)
            given = task if task is not None else loaded.task or {}
            return supervisor.start(given, loaded.context, loaded.source, loaded.subject)

    monkeypatch.setattr(launch, "run", run)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_a_task_is_read_from_a_file_and_shown_in_its_own_characters(
    tmp_path: Path, sqlite_url: str, in_process: None
) -> None:
    fleet = tmp_path / "notes.py"
    fleet.write_text(NOTE_FILE)
    # The operator's question is long and not in English: it goes in a file.
    question = "Prüfen Sie die Rechnung für Zürich (¥12 000, ✓ signée) " + "très " * 2000
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"question": question}), encoding="utf-8")
    code, shown = cli("run", str(fleet), "--task-file", str(task), "--db", sqlite_url)
    assert code == 0, shown
    assert "notes: completed — noted" in shown
    # The clerk noted exactly that question, and the replay shows it as it was written.
    episode = re.search(r"episode: (\S+)", shown)
    assert episode is not None
    code, shown = cli("replay", episode.group(1), "--db", sqlite_url)
    assert code == 0, shown
    assert '{"text": "Prüfen Sie die Rechnung für Zürich (¥12 000, ✓ signée) très' in shown
    assert "\\u00fc" not in shown


def test_a_bad_task_file_is_one_line_naming_the_file_and_the_place(
    tmp_path: Path, sqlite_url: str
) -> None:
    fleet = tmp_path / "notes.py"
    fleet.write_text(NOTE_FILE)
    task = tmp_path / "task.json"
    # A comma too many on the second line.
    task.write_text('{"question": "q",\n  }\n')
    code, shown = cli("run", str(fleet), "--task-file", str(task), "--db", sqlite_url)
    assert code == 1
    [line] = shown.strip().splitlines()
    assert line.startswith(f"error: --task-file {task}: not valid JSON (")
    assert line.endswith(" at line 2, column 3)")
    # A list is not a task; a file that is not there is named; both ways at once is one too many.
    task.write_text("[1, 2]")
    code, shown = cli("run", str(fleet), "--task-file", str(task), "--db", sqlite_url)
    assert code == 1 and f"--task-file {task}: must be a JSON object" in shown
    missing = tmp_path / "nowhere.json"
    code, shown = cli("run", str(fleet), "--task-file", str(missing), "--db", sqlite_url)
    assert code == 1 and f"--task-file {missing}: cannot read it (No such file" in shown
    code, shown = cli(
        "run", str(fleet), "--task", "{}", "--task-file", str(task), "--db", sqlite_url
    )
    assert code == 1 and "--task and --task-file: give one of them" in shown


def test_facts_about_an_erased_subject_read_erased(sqlite_url: str) -> None:
    # Ada's refund desk recorded a fact about her; then she asked to be forgotten.
    with Store(sqlite_url) as store:
        refund_desk(store)
    code, shown = cli("forget", "customer:ada", "--db", sqlite_url)
    assert code == 0, shown
    # The fact is still listed, its statement shown as erased rather than as nothing.
    code, shown = cli("facts", "customer:ada", "--db", sqlite_url)
    assert code == 0, shown
    [row] = [line for line in shown.splitlines() if "customer:ada" in line]
    assert [cell.strip() for cell in row.split("│")][1:4] == [
        "customer:ada",
        "refund:1042",
        "[erased]",
    ]


def test_counts_agree_with_their_nouns(tmp_path: Path, sqlite_url: str) -> None:
    # One agent under one supervisor: both in the singular.
    fleet = tmp_path / "one.py"
    fleet.write_text(ONE_AGENT_FILE)
    code, shown = cli("validate", str(fleet))
    assert code == 0, shown
    assert "one is valid: 1 agent under 1 supervisor; entry a" in shown
    # Erasing a subject with one fact erases one fact.
    with Store(sqlite_url) as store:
        refund_desk(store)
    code, shown = cli("forget", "customer:ada", "--db", sqlite_url)
    assert code == 0, shown
    assert "; 1 fact erased" in shown
    # An episode waiting for one approval says so in the singular.
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds(1000)
        host = Host(demo.topology, store, clock, ids)
        RootSupervisor(demo.topology, store, LocalHost(host), clock, ids).start(
            demo.task, demo.context
        )
    code, shown = cli("episodes", "--db", sqlite_url)
    assert code == 0, shown
    assert "refunds waits for 1 approval " in shown.replace("│", " ")
