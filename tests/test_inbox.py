"""The approvals inbox: deadlines that deny as timed_out, the medium-tier digest decided
in one batch, high-tier requests that interrupt a person now."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from tether.agents import call, say
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.audit import AuditKey
from tether.memory.coverage import verify_trail
from tether.memory.errors import ApprovalError
from tether.memory.events import ActionRecorded, ApprovalRequested
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Approvals, Grant, Topology

from .test_gate import Run, fleet, threshold_fleet


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


NO_DEADLINES = Approvals(medium=None, high=None)
"""The runs below are on a 2026-01-01 test clock and the CLI reads the real one: without
deadlines, their requests wait however late the CLI looks."""


def medium_fleet() -> Topology:
    topology = fleet([call("flaky"), say("done")], grants=(Grant("flaky"),))
    return dataclasses.replace(topology, approvals=NO_DEADLINES)


def high_fleet() -> Topology:
    topology = threshold_fleet([call("pay", to="a@x.test", amount="120"), say("ok")])
    return dataclasses.replace(topology, approvals=NO_DEADLINES)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_past_its_deadline_a_request_is_denied_as_timed_out(store: Store) -> None:
    topology = dataclasses.replace(
        threshold_fleet([call("pay", to="a@x.test", amount="120"), say("gave up")]),
        approvals=Approvals(high=timedelta(minutes=30)),
    )
    run = Run(store, topology)
    [item] = Inbox(store, StepClock()).items("pending")
    deadline = item.request.deadline
    assert deadline is not None and deadline - item.request.at == timedelta(minutes=30)
    # Before the deadline nothing happens; after it, whoever looks first records it.
    assert Inbox(store, StepClock()).expire(deadline - timedelta(seconds=1)) == []
    [expired] = Inbox(store, StepClock()).expire(deadline)
    assert (expired.status, expired.approver) == ("timed_out", "deadline")
    with pytest.raises(ApprovalError, match="deadlines default to deny"):
        Inbox(store, StepClock()).approve(item.id, "alice", "sorry, late")
    run.resume()
    assert run.stages(1)[-3:] == [
        ("approval", "timed_out"),
        ("budget", "settled"),
        ("record", "denied"),
    ]
    assert "no one decided by the deadline" in run.reasons(1)
    [recorded] = [e for e in run.events() if isinstance(e, ActionRecorded)]
    assert recorded.observation.startswith("timed out: no one decided by the deadline")
    assert run.report.status == "completed" and run.report.output == "gave up"
    # The trail tells a timeout from a person's denial.
    outcomes = [r.fields for r in store.audit.records() if r.fields["stage"] == "approval"]
    assert {(b["kind"], b["decision"], b["approver"]) for b in outcomes} >= {
        ("approval", "timed_out", "deadline"),
        ("decision", "timed_out", "deadline"),
    }
    key = AuditKey.load(store.audit_key_path)
    assert verify_trail(store, {key.id: key.public}).intact  # the timeout's event too
    code, listed = cli("inbox", "list", "--all", "--json", "--db", store.url)
    assert code == 0 and '"status": "timed_out"' in listed


def test_the_digest_is_decided_in_one_batch_all_but_some(store: Store) -> None:
    runs = [Run(store, medium_fleet(), first_id=100 * n) for n in (1, 2, 3)]
    high = Run(store, high_fleet())
    code, shown = cli("inbox", "digest", "--json", "--db", store.url)
    assert code == 0
    digest = json.loads(shown)
    assert len(digest["items"]) == 3  # the high-tier request is not in the batch
    assert {i["tier"] for i in digest["items"]} == {"medium"}
    keep = digest["items"][1]["id"]
    code, output = cli(
        "inbox", "digest", "--approve", digest["digest"], "--except", keep,
        "--as", "alice", "--reason", "weekly review", "--db", store.url,
    )  # fmt: skip
    assert code == 0, output
    assert "2 approved as alice; 1 left pending" in output
    statuses = {str(i.id): i.status for i in Inbox(store, StepClock()).items()}
    assert statuses[keep] == "pending"
    assert sorted(statuses.values()) == ["granted", "granted", "pending", "pending"]
    for run in runs:
        run.resume()
    assert [r.report.status for r in runs] == ["completed", "waiting", "completed"]
    assert high.report.status == "waiting"


def test_a_digest_that_changed_since_it_was_shown_is_refused(store: Store) -> None:
    Run(store, medium_fleet())
    seen = Inbox(store, StepClock()).digest()
    Run(store, medium_fleet(), first_id=100)  # a new request arrives while the person reads
    code, output = cli("inbox", "digest", "--deny", seen.id, "--as", "bob", "--db", store.url)
    assert code == 1
    assert "the digest changed since it was shown" in output
    assert [i.status for i in Inbox(store, StepClock()).items()] == ["pending", "pending"]


def test_a_high_tier_request_interrupts_a_person_now(store: Store) -> None:
    told: list[ApprovalRequested] = []
    topology = threshold_fleet([call("pay", to="a@x.test", amount="120"), say("ok")])
    clock = StepClock()
    host = Host(
        topology, store, clock, SequentialIds(), inbox=Inbox(store, clock, notify=told.append)
    )
    report = RootSupervisor(topology, store, LocalHost(host), clock, host.ids).start({}, {})
    assert report.status == "waiting"
    assert [(r.tool, r.tier) for r in told] == [("pay", "high")]
    # A medium-tier request waits for the digest, quietly.
    Run(store, fleet([call("flaky"), say("done")], grants=(Grant("flaky"),)), first_id=100)
    assert len(told) == 1


def test_inbox_show_prints_one_request(store: Store) -> None:
    Run(store, high_fleet())
    [item] = Inbox(store, StepClock()).items()
    code, output = cli("inbox", "show", str(item.id), "--db", store.url)
    assert code == 0
    assert "tool:            pay" in output and "deadline:" in output
    code, output = cli("inbox", "show", "nope", "--db", store.url)
    assert code == 1 and len(output.strip().splitlines()) == 1
    code, output = cli(
        "inbox", "approve", str(item.id), "--as", "alice", "--json", "--db", store.url
    )
    assert code == 0
    assert json.loads(output)["status"] == "granted" and json.loads(output)["approver"] == "alice"
