"""The fault proxy the live suite puts between tether's OpenAI adapter and a real model
server, here in front of the fake server: it passes traffic through untouched, injects
each kind of fault when asked, reproducibly, and tether records how it handled each one
(a deny with its reason, a retry after the wait asked for, a failure after its retries)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import OpenAIModel, ToolContext, tool
from tether.agents.model import ModelRequest, ToolSpec
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import TransientModelError
from tether.memory.events import (
    AgentFailed,
    BoundariesChecked,
    ModelResponded,
    agent_stream_id,
)
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Restarts, Role, Supervisor, Topology

from .live.proxy import KINDS, Fault, FaultProxy, Kind
from .test_openai_adapter import Fake, completion, serving


class Order(BaseModel):
    order_id: str
    copies: int


@tool(read_only=True)
def reprint(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Reprint an order's receipt."""
    return {"reprinted": args.order_id, "copies": args.copies}


REPRINT = completion(calls=[("reprint", '{"order_id": "A-1042", "copies": 2}')])
"""The model asks for a well-formed reprint."""


@pytest.fixture
def fake() -> Iterator[Fake]:
    yield from serving()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def run(store: Store, model: OpenAIModel, waits: list[float] | None = None) -> Any:
    """One clerk who may reprint receipts, run in process on the model; its report and
    its events. No restarts, so a failure is the agent's last word."""
    agent = Agent("clerk", Role("clerk", (Grant("reprint", tier="low"),)), model, (reprint,))
    topology = Topology("t", Supervisor("root", (agent,), restarts=Restarts(max_restarts=0)))
    clock, ids = StepClock(), SequentialIds()
    sleep = waits.append if waits is not None else (lambda s: None)
    host = Host(topology, store, clock, ids, sleep=sleep)
    supervisor = RootSupervisor(topology, store, LocalHost(host), clock, ids, sleep=sleep)
    report = supervisor.start({"do": "it"})
    return report, store.read(agent_stream_id(report.episode_id, "clerk"))


def of(kind: type[Any], events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def ask(model: OpenAIModel) -> Any:
    """One turn of the model, offered the reprint tool."""
    spec = ToolSpec("reprint", "Reprint an order's receipt.", Order.model_json_schema())
    return model.respond(ModelRequest("clerk", 0, (), (spec,)))


def test_with_no_fault_due_requests_and_answers_pass_unchanged(fake: Fake) -> None:
    fake.replies += [REPRINT]
    with FaultProxy(fake.url, fraction=0.0) as proxy:
        # The proxy's base URL keeps the upstream's path, so the adapter points at it as is.
        assert proxy.url.endswith("/v1") and proxy.url != fake.url
        model = OpenAIModel("fake-1", base_url=proxy.url, api_key="sk-local")
        turn = ask(model)
    [call] = turn.tool_calls
    assert (call.name, call.arguments) == ("reprint", {"order_id": "A-1042", "copies": 2})
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (100, 20)
    # The upstream saw the adapter's request: its path, body and key.
    [seen] = fake.requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == "fake-1"
    assert seen["body"]["tools"][0]["function"]["name"] == "reprint"
    assert seen["headers"]["authorization"] == "Bearer sk-local"
    assert proxy.injected == Counter() and proxy.log == []


def test_an_invented_tool_is_denied_as_unknown_and_the_model_goes_on(
    fake: Fake, store: Store
) -> None:
    # The model asks for a reprint; the proxy renames the call to a tool nobody offered.
    fake.replies += [REPRINT, completion("done")]
    with FaultProxy(fake.url, fraction=1.0, kinds=("invented_tool",), at_most=1) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(1, "invented_tool")]
    [checked] = of(BoundariesChecked, events)
    assert checked.decision == "deny"
    assert "unknown tool 'transfer_funds'" in checked.reason
    # The refusal went back to the model, which then finished.
    fed_back = fake.requests[1]["body"]["messages"][-1]
    assert fed_back["role"] == "tool" and "unknown tool 'transfer_funds'" in fed_back["content"]
    assert report.status == "completed" and report.output == "done"


def test_a_model_that_only_talked_is_given_an_invented_call(fake: Fake, store: Store) -> None:
    # A real model often answers in text; the proxy adds the invented call to it.
    fake.replies += [completion("all done"), completion("done")]
    with FaultProxy(fake.url, fraction=1.0, kinds=("invented_tool",), at_most=1) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.injected == Counter({"invented_tool": 1})
    [checked] = of(BoundariesChecked, events)
    assert checked.decision == "deny" and "unknown tool 'transfer_funds'" in checked.reason
    assert report.status == "completed" and report.output == "done"


@pytest.mark.parametrize("kind", ["truncated_arguments", "non_object_arguments"])
def test_arguments_that_are_not_a_json_object_are_denied_with_a_way_out(
    fake: Fake, store: Store, kind: Kind
) -> None:
    # The proxy cuts the reprint's arguments in half, or swaps them for a list or number.
    fake.replies += [REPRINT, completion("done")]
    with FaultProxy(fake.url, fraction=1.0, kinds=(kind,), at_most=1, seed=3) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(1, kind)]
    [checked] = of(BoundariesChecked, events)
    assert checked.decision == "deny"
    assert "arguments must be a JSON object" in checked.reason
    assert "call reprint again with its arguments as a JSON object" in checked.reason
    assert report.status == "completed"


# The seeds mistype copies (a string for a number), then order_id (a number, then a list,
# for a string).
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_an_argument_of_the_wrong_type_is_denied_naming_the_field(
    fake: Fake, store: Store, seed: int
) -> None:
    fake.replies += [REPRINT, completion("done")]
    with FaultProxy(fake.url, fraction=1.0, kinds=("wrong_type",), at_most=1, seed=seed) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(1, "wrong_type")]
    # Whichever argument the proxy mistyped, the schema names it.
    [turn, _] = of(ModelResponded, events)
    sent = turn.tool_calls[0]["arguments"]
    [field] = [k for k, v in sent.items() if v != {"order_id": "A-1042", "copies": 2}[k]]
    [checked] = of(BoundariesChecked, events)
    assert checked.decision == "deny"
    assert [v["field"] for v in checked.violations] == [field]
    assert checked.reason.startswith(f"{field}: Input should be a valid ")
    assert report.status == "completed"


def test_a_wrong_type_with_no_argument_to_mistype_falls_back_to_another_fault(
    fake: Fake,
) -> None:
    # A text answer has no argument to mistype; another enabled fault stands in (seed 1
    # draws wrong_type first).
    fake.replies += [completion("just text")]
    kinds: tuple[Kind, ...] = ("wrong_type", "non_object_arguments")
    with FaultProxy(fake.url, fraction=1.0, kinds=kinds, seed=1) as proxy:
        turn = ask(OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(1, "non_object_arguments")]
    [call] = turn.tool_calls
    assert call.name == "reprint" and not isinstance(call.arguments, dict)
    # With no other fault enabled, the answer passes as it was, and nothing is counted.
    fake.replies += [completion("just text")]
    with FaultProxy(fake.url, fraction=1.0, kinds=("wrong_type",)) as proxy:
        turn = ask(OpenAIModel("fake-1", base_url=proxy.url))
    assert turn.text == "just text" and turn.tool_calls == ()
    assert proxy.log == []


def test_a_500_is_retried_and_the_failure_recorded_after_the_last_attempt(
    fake: Fake, store: Store
) -> None:
    # Every call fails with a 500 the proxy makes up; the upstream is never called.
    with FaultProxy(fake.url, fraction=1.0, kinds=("server_error",)) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(n, "server_error") for n in (1, 2, 3)]
    assert fake.requests == []
    [failed] = of(AgentFailed, events)
    assert failed.reason.startswith("model failed after 3 attempts: fake-1: 500: ")
    assert "injected by the fault proxy" in failed.reason
    assert report.status == "waiting"  # escalated to a person, with the reason


def test_a_500_then_a_good_answer_is_one_turn_of_two_attempts(fake: Fake, store: Store) -> None:
    fake.replies += [completion("done")]
    with FaultProxy(fake.url, fraction=1.0, kinds=("server_error",), at_most=1) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == [Fault(1, "server_error")]
    [turn] = of(ModelResponded, events)
    assert turn.attempts == 2 and report.status == "completed"


def test_a_429_is_retried_after_the_wait_it_asked_for(fake: Fake, store: Store) -> None:
    fake.replies += [completion("done")]
    waits: list[float] = []
    with FaultProxy(fake.url, fraction=1.0, kinds=("rate_limited",), at_most=1) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url), waits)
    assert proxy.log == [Fault(1, "rate_limited")]
    assert waits == [1.0]  # the proxy's Retry-After, exactly
    [turn] = of(ModelResponded, events)
    assert turn.attempts == 2 and report.status == "completed"


def test_a_stalled_answer_times_out_is_retried_and_the_stall_ends_at_close(
    fake: Fake, store: Store
) -> None:
    # The first answer is held back far longer than the adapter waits (half a second).
    fake.replies += [completion("too late"), completion("done")]
    proxy = FaultProxy(fake.url, fraction=1.0, kinds=("stalled",), at_most=1, stall_s=600.0)
    try:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url, timeout_s=0.5))
        assert proxy.log == [Fault(1, "stalled")]
        [turn] = of(ModelResponded, events)
        assert turn.attempts == 2 and report.output == "done"
        # The first answer is still held; closing the proxy drops it instead of waiting.
        closing = threading.Thread(target=proxy.close)
        closing.start()
        closing.join(timeout=60)
        assert not closing.is_alive(), "close() waited out the stall"
    finally:
        proxy.close()


def test_a_stall_on_every_attempt_fails_the_agent_with_the_timeout(
    fake: Fake, store: Store
) -> None:
    fake.replies += [completion("too late")] * 3
    with FaultProxy(fake.url, fraction=1.0, kinds=("stalled",), stall_s=600.0) as proxy:
        report, events = run(store, OpenAIModel("fake-1", base_url=proxy.url, timeout_s=0.5))
    assert proxy.injected == Counter({"stalled": 3})
    [failed] = of(AgentFailed, events)
    assert failed.reason.startswith("model failed after 3 attempts: fake-1: APITimeoutError")
    assert report.status == "waiting"


def test_the_same_seed_injects_the_same_faults(fake: Fake) -> None:
    # Twenty turns through two proxies with one seed: the same requests get the same
    # faults, mutated the same way.
    mutations: tuple[Kind, ...] = ("invented_tool", "truncated_arguments", "non_object_arguments")

    def twenty(seed: int) -> tuple[list[Fault], list[Any]]:
        fake.replies += [REPRINT] * 20
        with FaultProxy(fake.url, fraction=0.5, kinds=mutations, seed=seed) as proxy:
            model = OpenAIModel("fake-1", base_url=proxy.url)
            calls = [ask(model).tool_calls for _ in range(20)]
        return proxy.log, calls

    first, again = twenty(7), twenty(7)
    assert first == again
    log, _ = first
    assert 0 < len(log) < 20  # some turns, not all
    assert {f.kind for f in log} == set(mutations)


def test_bad_settings_are_refused_naming_the_setting(fake: Fake) -> None:
    with pytest.raises(ValueError, match="kinds: choose from"):
        FaultProxy(fake.url, kinds=("meteor_strike",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fraction: must be between 0 and 1"):
        FaultProxy(fake.url, fraction=1.5)
    with pytest.raises(ValueError, match="upstream: a URL like"):
        FaultProxy("127.0.0.1:8000")
    assert set(KINDS) == {
        "invented_tool",
        "truncated_arguments",
        "non_object_arguments",
        "wrong_type",
        "server_error",
        "rate_limited",
        "stalled",
    }


def test_an_unreachable_upstream_is_a_502_which_the_adapter_retries() -> None:
    # The model server is down (restarting, say): nothing listens on its port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{port}/v1", fraction=0.0) as proxy:
        with pytest.raises(TransientModelError, match=r"fake-1: 502: upstream .* unreachable"):
            ask(OpenAIModel("fake-1", base_url=proxy.url))
    assert proxy.log == []
