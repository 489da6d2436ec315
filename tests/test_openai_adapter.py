"""The OpenAI-compatible adapter against a local fake server speaking the real wire
format: tool calls, usage and cost, transient failures retried (429 with Retry-After,
5xx), other errors not, malformed tool arguments refused at the gate, and no network."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tether.agents import OpenAIModel, Price
from tether.agents.model import ModelRequest
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import ModelError
from tether.memory.events import (
    AgentFailed,
    BoundariesChecked,
    ModelResponded,
    agent_stream_id,
)
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Budget, Grant, Restarts, Role, Supervisor, Topology

from .test_gate import noop


class Fake(ThreadingHTTPServer):
    """Answers POST .../chat/completions with scripted (status, headers, body) replies
    and keeps every request it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: Fake

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"path": self.path, "body": body, "headers": headers})
        status, headers, reply = self.server.replies.pop(0)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def completion(
    text: str | None = None,
    calls: list[tuple[str, str]] = (),  # type: ignore[assignment]
    usage: tuple[int, int] = (100, 20),
) -> tuple[int, dict[str, str], dict[str, Any]]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
    return (
        200,
        {},
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "fake-1",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
        },
    )


def error(status: int, message: str, **headers: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    return status, headers, {"error": {"message": message, "type": "x", "code": None}}


def serving() -> Iterator[Fake]:
    """A fake endpoint answering on a thread, for as long as the generator runs."""
    server = Fake()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    yield from serving()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


PRICE = Price(input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"))


def run(
    store: Store,
    model: OpenAIModel,
    waits: list[float] | None = None,
    restarts: Restarts | None = None,
    **kw: Any,
) -> Any:
    agent = Agent("clerk", Role("clerk", (Grant("noop", tier="low"),)), model, (noop,), **kw)
    topology = Topology("t", Supervisor("root", (agent,), restarts=restarts or Restarts()))
    clock, ids = StepClock(), SequentialIds()
    sleep = waits.append if waits is not None else (lambda s: None)
    host = Host(topology, store, clock, ids, sleep=sleep)
    supervisor = RootSupervisor(topology, store, LocalHost(host), clock, ids, sleep=sleep)
    report = supervisor.start({"do": "it"})
    return report, store.read(agent_stream_id(report.episode_id, "clerk"))


def test_tool_calls_usage_and_cost_map_both_ways(fake: Fake, store: Store) -> None:
    fake.replies += [completion(calls=[("noop", "{}")]), completion("done", usage=(150, 5))]
    model = OpenAIModel("fake-1", base_url=fake.url, price=PRICE)
    report, events = run(store, model, budget=Budget(cost=Decimal("1")))
    assert report.status == "completed" and report.output == "done"
    turns = [e for e in events if isinstance(e, ModelResponded)]
    assert [t.usage for t in turns] == [
        {"input_tokens": 100, "output_tokens": 20},
        {"input_tokens": 150, "output_tokens": 5},
    ]
    assert [t.cost for t in turns] == ["0.00036", "0.00034"]  # priced by the model's price
    first, second = (r["body"] for r in fake.requests)
    assert fake.requests[0]["path"] == "/v1/chat/completions"
    assert first["model"] == "fake-1"
    [tool] = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "noop"
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    # The second request carries the call and its result, tied by the call's id.
    assistant, result = second["messages"][2], second["messages"][3]
    assert assistant["tool_calls"][0]["id"] == "call_0"
    assert assistant["tool_calls"][0]["function"] == {"name": "noop", "arguments": "{}"}
    assert result["role"] == "tool" and result["tool_call_id"] == "call_0"


def test_a_rate_limit_waits_as_asked_and_the_attempts_are_recorded(
    fake: Fake, store: Store
) -> None:
    fake.replies += [
        error(429, "slow down", **{"Retry-After": "1.5"}),
        error(503, "overloaded"),
        completion("done"),
    ]
    waits: list[float] = []
    report, events = run(store, OpenAIModel("fake-1", base_url=fake.url), waits)
    assert report.status == "completed"
    [turn] = [e for e in events if isinstance(e, ModelResponded)]
    assert turn.attempts == 3
    assert waits[0] == 1.5  # the provider's Retry-After, exactly
    assert len(waits) == 2 and 0 <= waits[1] <= 8  # then backoff with jitter


def test_an_error_that_is_not_transient_fails_the_agent_at_once(fake: Fake, store: Store) -> None:
    fake.replies += [error(400, "messages: unknown role 'robot'")]
    report, events = run(
        store, OpenAIModel("fake-1", base_url=fake.url), restarts=Restarts(max_restarts=0)
    )
    assert len(fake.requests) == 1  # not retried
    [failed] = [e for e in events if isinstance(e, AgentFailed)]
    assert failed.reason == "fake-1: 400: messages: unknown role 'robot'"
    assert report.status == "waiting"  # escalated to a person, with the reason


def test_malformed_tool_arguments_are_refused_at_the_gate_and_the_model_goes_on(
    fake: Fake, store: Store
) -> None:
    fake.replies += [completion(calls=[("noop", "{not json")]), completion("sorry, done")]
    report, events = run(store, OpenAIModel("fake-1", base_url=fake.url))
    assert report.status == "completed"
    [checked] = [e for e in events if isinstance(e, BoundariesChecked)]
    assert checked.decision == "deny"
    assert "arguments must be a JSON object; got '{not json'" in checked.reason
    fed_back = fake.requests[1]["body"]["messages"][-1]
    assert fed_back["role"] == "tool" and "arguments must be a JSON object" in fed_back["content"]


def test_a_long_retry_after_is_a_failure_not_a_wait(fake: Fake) -> None:
    fake.replies += [error(429, "come back tomorrow", **{"Retry-After": "86400"})]
    with pytest.raises(ModelError, match="rate limited for 86400 s"):
        OpenAIModel("fake-1", base_url=fake.url).respond(ModelRequest("a", 0, (), ()))


def test_network_models_are_off_in_tests() -> None:
    model = OpenAIModel("gpt-4.1-mini", base_url="https://api.openai.com/v1")
    with pytest.raises(ModelError, match="network model calls are off"):
        model.respond(ModelRequest("a", 0, (), ()))


def test_the_model_travels_to_a_worker_without_its_client(fake: Fake) -> None:
    fake.replies += [completion("hi")]
    model = OpenAIModel("fake-1", base_url=fake.url, price=PRICE)
    assert model.respond(ModelRequest("a", 0, (), ())).text == "hi"
    copy = pickle.loads(pickle.dumps(model))
    assert copy._client is None and (copy.base_url, copy.price) == (fake.url, PRICE)


def test_the_api_key_may_be_a_secret_handle_resolved_only_to_call(
    fake: Fake, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is a handle in the topology; its value is read from the environment when the
    # client connects, and appears nowhere in the record.
    monkeypatch.setenv("TETHER_SECRET_GATEWAY_KEY", "sk-live-0123456789")
    fake.replies += [completion("done")]
    model = OpenAIModel("fake-1", base_url=fake.url, api_key="secret://gateway-key", seed=7)
    report, events = run(store, model)
    assert report.status == "completed"
    [request] = fake.requests
    assert request["headers"]["authorization"] == "Bearer sk-live-0123456789"
    assert "tool_choice" not in request["body"]  # the endpoint's default unless asked
    assert request["body"]["seed"] == 7  # asked for reproducible sampling
    assert not any("sk-live-0123456789" in repr(e) for e in events)


def test_a_key_handle_with_no_value_fails_the_agent_naming_the_variable(
    fake: Fake, store: Store
) -> None:
    model = OpenAIModel("fake-1", base_url=fake.url, api_key="secret://missing-key")
    report, _ = run(store, model)
    assert report.status == "waiting"  # the agent failed: its supervisor asks a person
    assert "api_key secret://missing-key is not set; export TETHER_SECRET_MISSING_KEY" in (
        report.output
    )
    assert fake.requests == []


def test_a_tool_choice_names_the_tool_the_model_must_call(fake: Fake, store: Store) -> None:
    fake.replies += [completion(calls=[("noop", "{}")]), completion("done")]
    model = OpenAIModel("fake-1", base_url=fake.url, tool_choice="noop")
    run(store, model)
    first = fake.requests[0]["body"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "noop"}}
