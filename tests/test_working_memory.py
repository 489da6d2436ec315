"""Working memory: bounded in tokens, compacted by recorded events, paged back on demand,
and rebuilt exactly for a post-mortem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ModelRequest, ModelTurn, ScriptedModel, ToolContext, call, say, tool
from tether.agents._context import digest, total
from tether.agents.loop import context_at
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import TopologyError
from tether.memory.events import ActionRecorded, ContextCompacted, ModelResponded, agent_stream_id
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology


class Page(BaseModel):
    n: int


@tool(read_only=True)
def fetch(args: Page, ctx: ToolContext) -> dict[str, Any]:
    """Fetch a long page of a report."""
    return {"page": args.n, "text": f"page {args.n}: " + "lorem ipsum " * 40}


seen: list[tuple[ModelRequest, ...]] = []


def watching(turn: ModelTurn) -> Any:
    """A scripted turn that also keeps what the model was shown."""

    def respond(request: ModelRequest) -> ModelTurn:
        seen.append((request,))
        return turn

    return respond


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    seen.clear()
    with Store(sqlite_url) as s:
        yield s


def reader(script: list[Any], bound: int | None = 400) -> Topology:
    return Topology(
        "reading",
        Supervisor(
            "root",
            (
                Agent(
                    "reader",
                    Role("reader", grants=(Grant("fetch"),)),
                    ScriptedModel(script),
                    tools=(fetch,),
                    context_tokens=bound,
                    max_turns=20,
                ),
            ),
        ),
    )


def run(store: Store, topology: Topology) -> list[Any]:
    clock, ids = StepClock(), SequentialIds()
    host = Host(topology, store, clock, ids)
    episode = RootSupervisor(topology, store, LocalHost(host), clock, ids).start({}, {})
    assert episode.status == "completed", episode
    return store.read(agent_stream_id(episode.episode_id, "reader"))


def test_a_full_working_memory_is_compacted_by_a_recorded_event(store: Store) -> None:
    # Six long pages against a 400-token bound: the oldest turns become a summary.
    events = run(
        store,
        reader(
            [watching(call("fetch", n=i)) for i in range(1, 7)] + [watching(say("read it all"))]
        ),
    )
    compactions = [e for e in events if isinstance(e, ContextCompacted)]
    assert compactions
    first = compactions[0]
    assert first.tokens_before > 400 >= first.tokens_after
    assert f"events {first.first}-{first.last}" in first.summary
    assert "page_back(first=" in first.summary
    # Every model call saw a context within the bound.
    for (request,) in seen:
        assert total(request.messages) <= 400


def test_the_context_of_every_model_call_is_rebuilt_exactly(store: Store) -> None:
    events = run(
        store, reader([watching(call("fetch", n=i)) for i in range(1, 7)] + [watching(say("done"))])
    )
    calls = [e for e in events if isinstance(e, ModelResponded)]
    assert len(calls) == len(seen) == 7
    for i, (request,) in enumerate(seen):
        rebuilt = context_at(events, i)
        assert rebuilt == list(request.messages)  # from the stream alone, no topology
        assert calls[i].context is not None
        assert calls[i].context["digest"] == digest(rebuilt)


def test_page_back_brings_the_originals_back(store: Store) -> None:
    def page_back_first_summary(request: ModelRequest) -> ModelTurn:
        summary = next(m for m in request.messages if m.content.startswith("[working memory"))
        first, last = summary.content.split("events ")[1].split(",")[0].split("-")
        return call("page_back", first=int(first), last=int(last))

    events = run(
        store,
        reader([call("fetch", n=i) for i in range(1, 6)] + [page_back_first_summary, say("done")]),
    )
    paged = [e for e in events if isinstance(e, ActionRecorded)][-1]
    assert paged.decision == "executed"
    shown = json.loads(paged.observation)["messages"]
    assert any("page 1: lorem ipsum" in m["content"] for m in shown)


def test_an_unbounded_agent_never_compacts(store: Store) -> None:
    events = run(store, reader([call("fetch", n=i) for i in range(1, 7)] + [say("ok")], bound=None))
    assert not any(isinstance(e, ContextCompacted) for e in events)


def test_a_tiny_bound_is_a_topology_error() -> None:
    with pytest.raises(TopologyError, match="context_tokens: must be an integer of at least 64"):
        reader([say("x")], bound=10)


def test_replay_context_shows_what_a_model_was_shown(store: Store) -> None:
    from typer.testing import CliRunner

    from tether.memory.episodes import list_episodes
    from tether.runtime.cli import app

    run(store, reader([call("fetch", n=i) for i in range(1, 7)] + [say("done")]))
    [episode] = list_episodes(store)
    out = CliRunner().invoke(
        app, ["replay", str(episode.episode_id), "--context", "reader:turn7", "--db", store.url]
    )
    assert out.exit_code == 0, out.output
    assert "matches the digest recorded at the turn" in out.output
    assert "[working memory compacted" in out.output
    bad = CliRunner().invoke(
        app, ["replay", str(episode.episode_id), "--context", "reader:turn99", "--db", store.url]
    )
    assert bad.exit_code == 1 and "reader had 7 model turns; choose turn1 to turn7" in bad.output
