"""Escalation: when the supervisor gives up, a person decides — retry with more budget,
accept the partial result, or abort — and nothing is dropped on the way."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import ScriptedModel, Usage, call, say
from tether.memory import Store
from tether.memory.audit import AuditKey
from tether.memory.coverage import verify_trail
from tether.memory.errors import ApprovalError, ConfigError
from tether.memory.events import AgentRestarted, BudgetGranted, EpisodeEscalated
from tether.runtime.cli import app
from tether.runtime.escalation import Escalations
from tether.runtime.reexecute import reexecute
from tether.topologies import Agent, Budget, Grant, Restarts, Role, Stuck, Supervisor, Topology

from .test_gate import Run, noop


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def costly(turn: Any, tokens: int) -> Any:
    return dataclasses.replace(turn, usage=Usage(input_tokens=tokens - 10, output_tokens=10))


def fleet(script: list[Any], **kw: Any) -> Topology:
    clerk = Agent(
        "clerk", Role("clerk", (Grant("noop", tier="low"),)), ScriptedModel(script), (noop,), **kw
    )
    return Topology("t", Supervisor("root", (clerk,), restarts=Restarts(backoff_s=0)))


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_out_of_budget_a_person_retries_with_more(store: Store) -> None:
    topology = fleet(
        [costly(call("noop"), 60), costly(call("noop"), 30), say("done")],
        budget=Budget(tokens=100),
    )
    run = Run(store, topology)
    assert run.report.status == "waiting"
    assert run.report.output.startswith("budget: token budget of clerk exhausted")
    [item] = Escalations(store, run.clock).items()
    assert item.request.options == ["retry", "accept", "abort"]
    listed = cli("inbox", "escalations", "--json", "--db", store.url)
    assert json.loads(listed.output)[0]["id"] == str(item.id)
    decided = cli(
        "inbox",
        "retry",
        str(item.id),
        "--tokens",
        "200",
        "--as",
        "alice",
        "--reason",
        "worth it",
        "--db",
        store.url,
    )
    assert decided.exit_code == 0, decided.output
    run.resume()
    assert run.report.status == "completed" and run.report.output == "done"
    own = store.read(run.episode)
    [granted] = [e for e in own if isinstance(e, BudgetGranted)]
    assert (granted.agent, granted.tokens, granted.by) == ("clerk", 200, "alice")
    assert any(
        isinstance(e, AgentRestarted) and e.reason == "retry by alice: worth it" for e in own
    )
    [audited] = [r.fields for r in store.audit.records() if r.fields["kind"] == "escalation"]
    assert (audited["decision"], audited["approver"]) == ("retry", "alice")
    key = AuditKey.load(store.audit_key_path)
    assert verify_trail(store, {key.id: key.public}).intact  # its event, accounted for
    # Re-execution feeds the person's answer back and finds the same episode.
    result = reexecute(store, run.episode, topology)
    assert result.identical, result.divergence


def test_a_person_accepts_the_partial_result(store: Store) -> None:
    topology = fleet(
        [call("record_progress", note="half", result={"rows": 50}), *[call("noop")] * 4],
        stuck=Stuck(repeats=3, no_progress_steps=10),  # which gives it record_progress
        restart="temporary",
    )
    run = Run(store, topology)
    assert run.report.status == "waiting"
    [item] = Escalations(store, run.clock).items()
    assert item.request.partial == {"clerk": {"rows": 50}}
    Escalations(store, run.clock).decide(item.id, "accept", "alice", "good enough")
    run.resume()
    assert run.report.status == "completed"
    assert run.report.output == '{"clerk": {"rows": 50}}'
    assert isinstance(store.read(run.episode)[-2], EpisodeEscalated)


def test_a_person_aborts_and_an_escalation_is_decided_once(store: Store) -> None:
    run = Run(store, fleet([call("noop")] * 6, stuck=Stuck(repeats=2), restart="temporary"))
    [item] = Escalations(store, run.clock).items()
    with pytest.raises(ConfigError, match="'maybe' is not an option"):
        Escalations(store, run.clock).decide(item.id, "maybe", "bob", "")
    Escalations(store, run.clock).decide(item.id, "abort", "bob", "not worth it")
    with pytest.raises(ApprovalError, match="already decided: abort by bob"):
        Escalations(store, run.clock).decide(item.id, "accept", "alice", "")
    run.resume()
    assert (run.report.status, run.report.output) == ("failed", "aborted by bob: not worth it")
    # Before anyone decides, resuming keeps it waiting.
    waiting = Run(
        store, fleet([call("noop")] * 6, stuck=Stuck(repeats=2), restart="temporary"), first_id=100
    )
    waiting.resume()
    assert waiting.report.status == "waiting"


def test_tether_run_says_how_to_answer_an_escalation(tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    fleet_file = tmp_path / "stuck.py"
    fleet_file.write_text(
        "from tether.agents import ScriptedModel, call\n"
        "from tether.topologies import Agent, Grant, Restarts, Role, Stuck, Supervisor, "
        "Topology\n"
        "from tests.test_gate import noop\n"
        "clerk = Agent('clerk', Role('clerk', (Grant('noop', tier='low'),)), "
        "ScriptedModel([call('noop')] * 5), (noop,), stuck=Stuck(repeats=2), "
        "restart='temporary')\n"
        "topology = Topology('t', Supervisor('root', (clerk,)))\n"
        "task = {'do': 'it'}\n"
    )
    result = cli("run", str(fleet_file), "--db", db)
    assert result.exit_code == 0, result.output
    assert "escalated clerk: stuck: noop called with the same arguments 2 times in a row" in (
        result.output
    )
    assert "retry: " in result.output and " inbox abort " in result.output
