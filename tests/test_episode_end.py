"""How an episode ends, and what a resume may change: cancel, a changed topology, a
headline that says which actions failed, and a resume that has nothing to do.

Each story records an episode in process (no Ray) from a topology file, as `tether run`
would, then drives the CLI.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store, SystemClock, list_episodes
from tether.memory.events import (
    ApprovalDenied,
    EpisodeCancelled,
    TopologyChangeAccepted,
)
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies.loader import Loaded, load_file

DESK = """
from decimal import Decimal

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory.errors import ToolError
from tether.topologies import Agent, ApprovalThreshold, Grant, Role, Supervisor, Topology


class Refund(BaseModel):
    to: str
    amount: Decimal


@tool(destructive=True, idempotent=True)
def refund(args: Refund, ctx: ToolContext) -> dict:
    '''Refund a customer.'''
    return {"to": args.to, "status": "refunded"}


@tool(read_only=True)
def lookup(args: Refund, ctx: ToolContext) -> dict:
    '''Look the order up in a database whose password is missing.'''
    raise ToolError("lookup", "secret DB_PASS not set")


topology = Topology(
    "desk",
    Supervisor(
        "root",
        (
            Agent(
                "clerk",
                Role(
                    "clerk",
                    (
                        Grant("lookup", tier="low"),
                        Grant(
                            "refund",
                            tier="low",
                            approval=ApprovalThreshold(field="amount", above=Decimal("THRESHOLD")),
                        ),
                    ),
                ),
                ScriptedModel(
                    [
                        call("lookup", to="ada@example.com", amount="120"),
                        call("refund", to="ada@example.com", amount="120"),
                        say("refunded"),
                    ]
                ),
                (lookup, refund),
            ),
        ),
    ),
)
task = {"ticket": "refund order 1042"}
"""


def desk_file(tmp_path: Path, threshold: str = "100") -> Path:
    f = tmp_path / "desk.py"
    f.write_text(DESK.replace("THRESHOLD", threshold))
    return f


def run_in_process(store: Store, loaded: Loaded) -> EpisodeReport:
    """What `tether run` does, on an in-process host (on the wall clock: an approval's
    deadline counts from now)."""
    clock, ids = SystemClock(), SequentialIds()
    host = LocalHost(Host(loaded.topology, store, clock, ids))
    supervisor = RootSupervisor(
        loaded.topology, store, host, clock, ids, fingerprint=loaded.fingerprint()
    )
    return supervisor.start(loaded.task or {}, loaded.context, loaded.source)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Ray fails the test: these commands must answer from the store."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr("tether.runtime.actor.ensure_ray", refuse)


def test_a_resume_with_nothing_decided_answers_without_ray(
    tmp_path: Path, sqlite_url: str, no_ray: None
) -> None:
    with Store(sqlite_url) as store:
        report = run_in_process(store, load_file(desk_file(tmp_path)))
    assert report.status == "waiting"
    code, out = cli("resume", str(report.episode_id), "--db", sqlite_url)
    assert code == 0, out
    assert "desk: waiting" in out and "inbox approve" in out


def test_a_changed_topology_is_refused_on_resume_unless_accepted(
    tmp_path: Path, sqlite_url: str, no_ray: None
) -> None:
    f = desk_file(tmp_path)
    with Store(sqlite_url) as store:
        report = run_in_process(store, load_file(f))
    [approval] = report.waiting
    assert cli("inbox", "approve", approval, "--db", sqlite_url, "--as", "alice")[0] == 0
    # Someone raises the approval threshold in the file before the episode finishes.
    f.write_text(f.read_text().replace('Decimal("100")', 'Decimal("5000")'))
    code, out = cli("resume", str(report.episode_id), "--db", sqlite_url)
    assert code == 1
    line = " ".join(out.split())
    assert "the topology file changed (sha256" in line
    assert "its policy (grants, rails, tools) changed" in line
    assert "--accept-changed" in line
    # Accepted, it is recorded with the new hashes and who accepted it.
    changed = load_file(f)
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds(start=100)
        host = LocalHost(Host(changed.topology, store, clock, ids))
        supervisor = RootSupervisor(
            changed.topology,
            store,
            host,
            clock,
            ids,
            owner="tether resume by bob",
            fingerprint=changed.fingerprint(),
        )
        assert supervisor.resume(report.episode_id, accept_changed=True).status == "completed"
        [accepted] = [
            e for e in store.read(report.episode_id) if isinstance(e, TopologyChangeAccepted)
        ]
        assert accepted.by == "tether resume by bob"
        assert accepted.fingerprint == changed.fingerprint()


def test_cancel_ends_a_waiting_episode_and_denies_what_it_waited_for(
    tmp_path: Path, sqlite_url: str, no_ray: None
) -> None:
    with Store(sqlite_url) as store:
        report = run_in_process(store, load_file(desk_file(tmp_path)))
    episode = str(report.episode_id)
    code, out = cli("cancel", episode, "--db", sqlite_url)
    assert code == 1 and "--reason" in out  # a reason is required: it is recorded
    code, out = cli(
        "cancel", episode, "--reason", "customer withdrew", "--as", "alice", "--db", sqlite_url
    )
    assert code == 0, out
    assert f"cancelled: {episode} (it was waiting) by alice" in out
    assert "denied 1 pending approval" in out
    with Store(sqlite_url) as store:
        [summary] = list_episodes(store)
        assert (summary.status, summary.detail) == ("cancelled", "by alice: customer withdrew")
        [cancelled] = [e for e in store.read(report.episode_id) if isinstance(e, EpisodeCancelled)]
        assert cancelled.was == "waiting"
        [denied] = store.read(uuid.UUID(report.waiting[0]))[1:]
        assert isinstance(denied, ApprovalDenied) and "cancelled" in denied.reason
        assert any(r.fields.get("kind") == "cancel" for r in store.audit.records())
        assert store.leases.current(report.episode_id).released  # type: ignore[union-attr]
    # The trail accounts for the cancellation and the denial it made.
    code, out = cli("audit", "verify", "--db", sqlite_url)
    assert code == 0, out
    # It cannot run or be cancelled again.
    code, out = cli("cancel", episode, "--reason", "again", "--db", sqlite_url)
    assert code == 1 and "already cancelled" in out
    code, out = cli("resume", episode, "--db", sqlite_url)
    assert code == 0 and "desk: cancelled" in out


def test_a_completed_episode_with_failed_actions_says_so(
    tmp_path: Path, sqlite_url: str, no_ray: None
) -> None:
    with Store(sqlite_url) as store:
        report = run_in_process(store, load_file(desk_file(tmp_path, threshold="1000")))
    assert report.status == "completed"
    code, out = cli("replay", str(report.episode_id), "--db", sqlite_url)
    assert code == 0, out
    assert "completed, 1 action failed (the tool failed: ToolError: tool 'lookup' failed: " in out
    assert "secret DB_PASS not set" in out
