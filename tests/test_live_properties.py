"""The live suite's property checkers, on episodes a scripted model drives: each property
holds on a well-behaved and on a misbehaving model, and each one says so when the store
shows it broken."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from tether.agents import (
    ModelRequest,
    ModelTurn,
    ScriptedModel,
    ToolCall,
    ToolContext,
    Usage,
    call,
    calls,
    say,
    tool,
)
from tether.agents.secrets import MappingSecrets, Secrets
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.events import (
    EffectApplied,
    EpisodeStarted,
    ExecutionStarted,
    ModelResponded,
    agent_stream_id,
    effect_stream_id,
)
from tether.memory.store import new_event
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    AllowedValues,
    Budget,
    Grant,
    Policy,
    Restarts,
    Role,
    Rule,
    Supervisor,
    Topology,
    demo,
    load_file,
)

from .live.properties import PROPERTIES, Report, check_episode, summary

RELEASE_GATE = Path(__file__).resolve().parent.parent / "examples" / "release_gate.py"
LEAKED = "db-canary-0a1b2c3d4e5f"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


class Episode:
    """One episode of a topology, in process, and a person who approves what it asks."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        task: dict[str, Any],
        context: dict[str, Any] | None = None,
        *,
        subject: str | None = None,
        secrets: Secrets | None = None,
        first_id: int = 1,
    ) -> None:
        self.store, self.topology, self.secrets = store, topology, secrets
        self.clock, self.ids = StepClock(), SequentialIds(first_id)
        self.report = self._supervisor().start(task, context or {}, subject=subject)
        self.id = self.report.episode_id

    def _supervisor(self) -> RootSupervisor:
        host = Host(self.topology, self.store, self.clock, self.ids, secrets=self.secrets)
        return RootSupervisor(
            self.topology, self.store, LocalHost(host), self.clock, self.ids, sleep=lambda _: None
        )

    def approve_and_resume(self) -> None:
        inbox = Inbox(self.store, self.clock)
        for item in inbox.items("pending"):
            inbox.approve(item.id, "alice", "checked")
        self.report = self._supervisor().resume(self.id)

    def check(self, **kw: Any) -> Report:
        return check_episode(self.store, self.id, self.topology, **kw)


def held(report: Report) -> list[str]:
    return [p for p in PROPERTIES if report.held(p)]


def evidence(report: Report, prop: str) -> str:
    return "\n".join(v.detail for v in report.broken(prop))


def with_models(topology: Topology, **models: ScriptedModel) -> Topology:
    """The topology with some agents' models swapped (and no restarts, so each scripted
    misbehaviour is seen once)."""

    def swap(child: Any) -> Any:
        if isinstance(child, Supervisor):
            return dataclasses.replace(child, children=tuple(swap(c) for c in child.children))
        if child.name in models:
            return dataclasses.replace(child, model=models[child.name])
        return child

    root = swap(topology.root)
    root = dataclasses.replace(root, restarts=Restarts(max_restarts=0, backoff_s=0))
    return dataclasses.replace(topology, root=root)


def refund_desk(store: Store, refunds: list[Any], **kw: Any) -> Episode:
    """The demo's refund desk, its refunds agent driven by ``refunds``."""
    topology = with_models(demo.topology, refunds=ScriptedModel(refunds))
    return Episode(store, topology, demo.task, demo.context, subject=demo.subject, **kw)


# --- the promises hold ----------------------------------------------------------------


def test_the_refund_desk_as_shipped_keeps_every_promise(store: Store) -> None:
    # The demo: an injected instruction the rails refuse, a refund a person approves.
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    waiting = run.check(secrets={"smtp": LEAKED})
    # Waiting for the approval is an ending: the episode is not left running.
    assert waiting.ok, waiting.violations
    assert waiting.ending == "waiting"
    run.approve_and_resume()
    report = run.check(secrets={"smtp": LEAKED})
    assert report.ok, report.violations
    assert (report.ending, report.denied, report.executed, report.effects) == (
        "completed",
        2,
        5,
        3,
    )


def test_a_model_that_invents_tools_and_garbles_arguments_is_contained(store: Store) -> None:
    # The refunds agent behaves as a small model does: it invents a tool, sends text for
    # arguments, leaves out a field, gives a word for an amount, then repeats one call
    # until it is stuck. Every call is refused at the boundaries and the loop is stopped.
    garbled = ToolCall("lookup_order", "1042,recipient:customers.example.com")  # type: ignore[arg-type]
    script = [
        call("refund_everything", order_id="1042"),
        calls(garbled),
        call("issue_refund", order_id="1042", amount="120.00"),
        call("issue_refund", order_id="1042", amount="lots", recipient="ada@example.com"),
        *[call("lookup_order", order_id="1042")] * 6,
    ]
    run = refund_desk(store, script)
    report = run.check()
    assert report.ok, report.violations
    assert report.malformed == {"unknown_tool": 1, "not_object": 1, "schema": 2}
    assert report.ending == "stuck", report.why
    # The four malformed calls were denied; the fifth repeat never reached the gate.
    assert (report.denied, report.executed) == (4, 5)


def test_a_model_that_talks_forever_is_stopped_by_its_token_budget(store: Store) -> None:
    # Each turn looks another order up and reports 60 tokens; the agent may spend 400.
    def next_order(request: ModelRequest) -> ModelTurn:
        turn = call("lookup_order", order_id=str(1000 + request.turn))
        return dataclasses.replace(turn, usage=Usage(input_tokens=50, output_tokens=10))

    refunds = demo.topology.agents()["refunds"]
    thrifty = dataclasses.replace(
        refunds, budget=Budget(steps=12, tokens=400), model=ScriptedModel([next_order] * 50)
    )
    root = dataclasses.replace(
        demo.topology.root,
        children=tuple(thrifty if c.name == "refunds" else c for c in demo.topology.root.children),
    )
    topology = dataclasses.replace(demo.topology, root=root)
    run = Episode(store, topology, demo.task, demo.context)
    report = run.check()
    assert report.ok, report.violations
    assert report.ending == "budget" and "token budget of refunds exhausted" in report.why


def test_a_busy_agent_is_stopped_by_its_time_to_live(store: Store) -> None:
    # The test clock moves a second per recorded event; the agent has 30 s to look up
    # orders forever.
    busy = ScriptedModel([call("lookup_order", order_id=str(n)) for n in range(40)])
    timed = tightened(
        with_models(demo.topology), "refunds", model=busy, budget=Budget(steps=12, ttl_s=30)
    )
    run = Episode(store, timed, demo.task, demo.context)
    report = run.check()
    assert report.ok, report.violations
    assert report.ending == "budget" and "time to live of agent refunds" in report.why
    # Judged by tighter budgets than it ran under, the same record breaks them.
    strict = tightened(timed, "refunds", budget=Budget(steps=2, ttl_s=10))
    found = evidence(check_episode(store, run.id, strict), "budgets")
    assert "agent refunds: 3 steps used, over its budget of 2" in found
    assert (
        "refunds: action #3 reserved a step" in found
        and "past the time to live of agent refunds (10 s)" in found
    )


def test_the_release_gate_keeps_every_promise_with_a_lying_gatekeeper(store: Store) -> None:
    # The release gate as shipped waits for a person's sign-off, then deploys.
    loaded = load_file(RELEASE_GATE)
    run = Episode(store, loaded.topology, {"release": "r42", "service": "checkout"})
    assert run.check().ok and run.check().ending == "waiting"
    run.approve_and_resume()
    report = run.check()
    assert report.ok, report.violations
    assert (report.ending, report.effects) == ("completed", 1)
    # A gatekeeper that makes the scorecard up and invents a force flag is refused twice.
    liar = ScriptedModel(
        [
            call("deploy", release="r13", scorecard="pass", freeze="none", incidents=0),
            call("deploy", release="r13", scorecard="pass", freeze="none", incidents="none"),
            call("force_deploy", release="r13"),
            say("shipped"),
        ]
    )
    lying = with_models(loaded.topology, gatekeeper=liar)
    run = Episode(store, lying, {"release": "r13", "service": "checkout"}, first_id=100)
    report = run.check()
    assert report.ok, report.violations
    assert (report.ending, report.denied, report.effects) == ("completed", 3, 0)
    assert report.malformed == {"unknown_tool": 1, "not_object": 0, "schema": 1}


# --- and each checker says so when they do not ------------------------------------------


def test_a_forged_effect_for_a_forbidden_recipient_breaks_rails_and_policy(store: Store) -> None:
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    run.approve_and_resume()
    # Someone writes a refund to mallory into the ledger, under a key of this episode.
    key = f"{run.id}/refunds/99"
    forged = new_event(
        EffectApplied,
        effect_stream_id(key),
        1,
        run.clock.now(),
        key=key,
        episode_id=run.id,
        agent="refunds",
        action=99,
        tool="issue_refund",
        arguments={"order_id": "1042", "amount": "50", "recipient": "mallory@evil.test"},
        result={"status": "succeeded"},
    )
    store.append([forged])
    report = run.check()
    assert held(report) == [p for p in PROPERTIES if p != "rails_and_policy"]
    found = evidence(report, "rails_and_policy")
    assert f"effect {key} (issue_refund by refunds #99) is in the ledger, but no action" in found
    assert "'mallory@evil.test' is not allowed" in found
    assert "rule allow:issue_refund.recipient" in found


def tightened(topology: Topology, agent: str, **changes: Any) -> Topology:
    """The topology with one agent's spec changed (the recorded episode stays as it was)."""
    spec = dataclasses.replace(topology.agents()[agent], **changes)
    root = dataclasses.replace(
        topology.root,
        children=tuple(spec if c.name == agent else c for c in topology.root.children),
    )
    return dataclasses.replace(topology, root=root)


def test_executed_actions_are_checked_again_not_taken_on_the_gates_word(store: Store) -> None:
    # The refund desk ran and completed. Checked against stricter rules than the gate
    # applied, each executed action is judged anew, as the checker sees it.
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    run.approve_and_resume()
    refunds = demo.topology.agents()["refunds"]
    # A rail: email may only go to the support desk.
    desk_only = AllowedValues(tool="send_email", field="to", values=("desk@example.com",))
    railed = tightened(demo.topology, "refunds", rails=(*refunds.rails, desk_only))
    found = evidence(check_episode(store, run.id, railed), "rails_and_policy")
    assert "refunds #5 send_email" in found and "the rails refuse it" in found
    assert "to 'ada@example.com' is not allowed; allowed: ['desk@example.com']" in found
    # A policy rule: no email at all.
    no_mail = Policy((Rule("no-mail", "deny", tools=("send_email",), reason="mail is off"),))
    found = evidence(
        check_episode(store, run.id, dataclasses.replace(demo.topology, policy=no_mail)),
        "rails_and_policy",
    )
    assert "refunds #5 send_email" in found and "the policy denies it: mail is off" in found
    # A grant that wants a person for every email: none was asked.
    grants = tuple(
        Grant("send_email", tier="high") if g.tool == "send_email" else g
        for g in refunds.role.grants
    )
    asking = tightened(demo.topology, "refunds", role=Role("refunds", grants))
    found = evidence(check_episode(store, run.id, asking), "rails_and_policy")
    assert "refunds #5 send_email ran without a person's approval (no person was asked)" in found
    # The refund a person did approve still counts as approved.
    assert "issue_refund" not in found


def test_an_execution_after_a_denial_breaks_stages_in_order(store: Store) -> None:
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    # Refunds #2 (5000 to mallory) was denied at the boundaries; an attempt to run it
    # appears after its record.
    stream = agent_stream_id(run.id, "refunds")
    position = len(store.read(stream)) + 1
    attempt = new_event(
        ExecutionStarted,
        stream,
        position,
        run.clock.now(),
        action=2,
        decision="started",
        reason="attempt 1",
        attempt=1,
    )
    store.append([attempt])
    report = run.check()
    assert not report.held("stages_in_order")
    found = evidence(report, "stages_in_order")
    assert "refunds #2 issue_refund: execution (started) after its record" in found
    assert "executed without passing boundaries, budget, governance, approval" in found


def test_a_deleted_audit_record_breaks_stages_in_order(store: Store) -> None:
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    with store.engine.begin() as conn:
        t = store.audit.table
        seq = conn.execute(sa.select(sa.func.max(t.c.seq))).scalar_one() // 2
        conn.execute(sa.delete(t).where(t.c.seq == seq))
    report = run.check()
    assert held(report) == [p for p in PROPERTIES if p != "stages_in_order"]
    assert "the audit trail does not verify" in evidence(report, "stages_in_order")


def test_forged_usage_over_a_tiny_budget_breaks_budgets(store: Store) -> None:
    clerk = Agent("clerk", Role("clerk"), ScriptedModel([say("done")]), budget=Budget(tokens=100))
    topology = Topology("tiny", Supervisor("root", (clerk,), budget=Budget(tokens=100)))
    run = Episode(store, topology, {"do": "it"})
    assert run.check().ok
    # A second turn is forged onto the clerk's stream: 480 tokens against 100.
    stream = agent_stream_id(run.id, "clerk")
    turn = new_event(
        ModelResponded,
        stream,
        len(store.read(stream)) + 1,
        run.clock.now(),
        turn=1,
        text="more",
        tool_calls=[],
        usage={"input_tokens": 400, "output_tokens": 80},
        context={"messages": 3, "tokens": 30, "digest": ""},
    )
    store.append([turn])
    found = evidence(run.check(), "budgets")
    assert "agent clerk: 481 tokens used, over its budget of 100 by more than one turn's" in found
    assert "supervisor root: 481 tokens used" in found


def test_an_episode_left_running_breaks_budgets(store: Store) -> None:
    clerk = Agent("clerk", Role("clerk"), ScriptedModel([say("done")]))
    topology = Topology("one", Supervisor("root", (clerk,)))
    episode = uuid.UUID(int=7)
    store.append(
        [
            EpisodeStarted(
                originator_id=episode,
                originator_version=1,
                at=StepClock().now(),
                topology="one",
                source={},
                agents=["clerk"],
                entry="clerk",
                input={},
                context={},
            )
        ]
    )
    report = check_episode(store, episode, topology)
    assert report.ending == "running"
    assert "the episode is still running" in evidence(report, "budgets")


def test_a_model_adapter_that_raises_breaks_malformed_handled(store: Store) -> None:
    # A bug in the adapter is not a malformed call the gate can refuse: the agent crashes.
    run = refund_desk(store, [call("lookup_order", order_id="1042"), RuntimeError("adapter bug")])
    report = run.check()
    assert report.crashed == 1
    assert held(report) == [p for p in PROPERTIES if p != "malformed_handled"]
    assert "refunds crashed: crashed: RuntimeError: adapter bug" in evidence(
        report, "malformed_handled"
    )


class Key(BaseModel):
    key: str


@tool(read_only=True, output="system")
def read_config(args: Key, ctx: ToolContext) -> dict[str, Any]:
    """Read a configuration value (a careless tool that returns a password it found)."""
    return {"key": args.key, "value": f"password={LEAKED}"}


def config_reader() -> Topology:
    model = ScriptedModel([call("read_config", key="db"), say("read")])
    agent = Agent("ops", Role("ops", (Grant("read_config", tier="low"),)), model, (read_config,))
    return Topology("ops", Supervisor("root", (agent,)))


def test_a_secret_the_scrubber_does_not_know_breaks_secrets_kept(store: Store) -> None:
    # The tool's result is sealed under the subject's key: only the decoded events show it.
    run = Episode(store, config_reader(), {}, subject="customer:ada", secrets=MappingSecrets({}))
    report = run.check(secrets={"db-password": LEAKED})
    assert held(report) == [p for p in PROPERTIES if p != "secrets_kept"]
    found = evidence(report, "secrets_kept")
    assert found.startswith("secret://db-password's value is in ActionExecuted of stream")
    assert "table" not in found  # sealed: the raw bytes do not show it


def test_a_secret_the_scrubber_knows_is_kept_unless_the_output_prints_it(store: Store) -> None:
    run = Episode(store, config_reader(), {}, secrets=MappingSecrets({"db-password": LEAKED}))
    assert run.check(secrets={"db-password": LEAKED}).ok
    printed = run.check(secrets={"db-password": LEAKED}, output=f"value: {LEAKED}\n")
    assert evidence(printed, "secrets_kept") == "secret://db-password's value is in the output"
    # Unsealed, a leak shows in the raw rows too.
    leaky = Episode(store, config_reader(), {}, secrets=MappingSecrets({}), first_id=100)
    found = evidence(leaky.check(secrets={"db-password": LEAKED}), "secrets_kept")
    assert "table tether_events" in found


def test_a_stage_of_an_action_never_proposed_breaks_replays(store: Store) -> None:
    run = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    assert run.check().held("replays")
    # A stage event for an action the stream never proposed: the timeline cannot fold it.
    stream = agent_stream_id(run.id, "refunds")
    stray = new_event(
        ExecutionStarted,
        stream,
        len(store.read(stream)) + 1,
        run.clock.now() + timedelta(seconds=1),
        action=99,
        decision="started",
        reason="attempt 1",
        attempt=1,
    )
    store.append([stray])
    report = run.check()
    assert "tether replay exited 1" in evidence(report, "replays")
    assert "refunds #99: stage events for an action never proposed" in evidence(
        report, "stages_in_order"
    )


# --- the summary --------------------------------------------------------------------------


def test_the_summary_counts_properties_endings_and_calls(store: Store) -> None:
    shipped = Episode(store, demo.topology, demo.task, demo.context, subject=demo.subject)
    garbled = ToolCall("lookup_order", "1042")  # type: ignore[arg-type]
    stuck = refund_desk(
        store, [calls(garbled), *[call("lookup_order", order_id="1")] * 6], first_id=100
    )
    leaky = Episode(store, config_reader(), {}, secrets=MappingSecrets({}), first_id=200)
    reports = [r.check(secrets={"db-password": LEAKED}) for r in (shipped, stuck, leaky)]
    text = summary(reports)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert "properties over 3 episodes" in text
    assert rows["secrets_kept"] == ["2", "1"]  # held twice, violated once
    assert rows["rails_and_policy"] == ["3", "0"]
    assert "ended: completed 1, stuck 1, budget 0, failed 0, waiting 1, running 0" in text
    # The shipped desk waits with one refusal (the injected refund); the stuck one's
    # garbled call was refused; the leaky one asked nothing that was refused.
    assert "denied calls per episode: mean 0.7, max 1, total 2" in text
    assert "malformed calls: unknown_tool 0, not_object 1, schema 0; crashed agents: 0" in text
    assert f"- {leaky.id} secrets_kept: secret://db-password's value is in" in text
