"""One numbering for the places in an agent's stream: the action ``#3`` that replay shows,
the model ``turn 2``, the stream's ``event 12``, read and printed alike by replay,
``--context``, ``--reexecute`` and ``redact``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory._steps import Step, label, parse_step
from tether.memory.errors import ConfigError
from tether.memory.events import ActionProposed, ModelResponded, agent_stream_id
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def refund_desk(store: Store) -> uuid.UUID:
    """The demo, its refund approved and the episode finished."""
    clock, ids = StepClock(), SequentialIds()

    def supervisor() -> RootSupervisor:
        host = Host(demo.topology, store, clock, ids)
        return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)

    episode = supervisor().start(demo.task, demo.context).episode_id
    [item] = Inbox(store, clock).items("pending")
    Inbox(store, clock).approve(item.id, "alice", "order checked")
    assert supervisor().resume(episode).status == "completed"
    return episode


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize(
    ("typed", "step"),
    [
        ("#3", Step("action", 3)),
        ("action3", Step("action", 3)),
        ("Action 3", Step("action", 3)),
        ("turn2", Step("turn", 2)),
        ("turn 2", Step("turn", 2)),
        ("event12", Step("event", 12)),
    ],
)
def test_each_labelled_form_reads_as_its_place(typed: str, step: Step) -> None:
    assert parse_step(typed, "PLACE") == step


def test_a_bare_number_is_refused_naming_each_numbering() -> None:
    # "2" meant a model call from 0 to --context and an event to redact: it says neither now.
    with pytest.raises(ConfigError) as refusal:
        parse_step("2", "PLACE")
    message = str(refusal.value)
    assert message.startswith("PLACE '2': a bare number no longer says which numbering")
    assert "action2 (as replay's #2)" in message and "turn2" in message and "event2" in message
    with pytest.raises(ConfigError, match="counted from 1"):
        parse_step("turn0", "PLACE")


def test_replay_context_and_redact_name_the_same_action(store: Store, sqlite_url: str) -> None:
    episode = refund_desk(store)
    refunds = agent_stream_id(episode, "refunds")
    stream = store.read(refunds)
    # The replay tree shows the refund that was approved as refunds' action #3.
    assert "#3 issue_refund" in cli("replay", str(episode), "--db", sqlite_url)
    [proposed] = [e for e in stream if isinstance(e, ActionProposed) and e.action == 3]
    # The model turn that asked for it, counted from 1 as replay's "N model turns" are.
    turns = [e for e in stream if isinstance(e, ModelResponded)]
    asking = max(
        i for i, t in enumerate(turns, 1) if t.originator_version < proposed.originator_version
    )
    # What the model saw when it asked for #3 is the context of that turn, by either name.
    by_action = cli("replay", str(episode), "--context", "refunds:#3", "--db", sqlite_url)
    by_turn = cli("replay", str(episode), "--context", f"refunds:turn{asking}", "--db", sqlite_url)
    position = turns[asking - 1].originator_version
    assert by_action.startswith(f"refunds turn {asking}, event {position} (it asked for #3): ")
    assert by_turn.startswith(f"refunds turn {asking}, event {position}: ")
    assert by_action.splitlines()[1:] == by_turn.splitlines()[1:]
    assert "matches the digest recorded at the turn" in by_turn
    # A bare number is refused rather than read in one of the old numberings.
    old = refused("replay", str(episode), "--context", "refunds:2", "--db", sqlite_url)
    assert "a bare number no longer says which numbering; give action2" in old
    # Redacting #3's arguments (action3 in a shell, where '#' starts a comment) hides
    # them where replay shows them.
    done = cli("redact", str(episode), "refunds", "action3", "arguments", "--db", sqlite_url)
    assert done.startswith(f"redacted refunds #3 arguments (event {proposed.originator_version};")
    with Store(sqlite_url) as s:
        [action] = [a for a in load_timeline(s, episode).agents[1].actions if a.action == 3]
    assert action.arguments == {"redacted": True}
    # Every event of the action that has the field is redacted: each stage's reason.
    reasons = cli("redact", str(episode), "refunds", "#3", "reason", "--db", sqlite_url)
    assert reasons.count("event ") == len(
        [e for e in stream if getattr(e, "action", None) == 3 and hasattr(e, "reason")]
    )


@pytest.mark.parametrize(
    ("place", "field", "words"),
    [
        ("#9", "arguments", "#9: refunds has no such place (it has event 1 to "),
        ("turn9", "text", "turn 9: refunds has no such place"),
        ("event1", "at", "field 'at': event 1 is TaskAssigned, which has ["),
        ("#3", "text", "field 'text': #3 is ActionProposed/"),
        ("3", "arguments", "PLACE '3': a bare number no longer says which numbering"),
    ],
)
def test_a_redaction_that_names_no_place_says_which_exist(
    store: Store, sqlite_url: str, place: str, field: str, words: str
) -> None:
    episode = refund_desk(store)
    assert words in refused("redact", str(episode), "refunds", place, field, "--db", sqlite_url)


def test_a_divergence_is_labelled_with_the_action_or_turn_it_belongs_to(store: Store) -> None:
    episode = refund_desk(store)
    stream = store.read(agent_stream_id(episode, "refunds"))
    [proposed] = [e for e in stream if isinstance(e, ActionProposed) and e.action == 2]
    first_turn = next(e for e in stream if isinstance(e, ModelResponded))
    assert label(stream, proposed.originator_version) == f"#2, event {proposed.originator_version}"
    assert label(stream, first_turn.originator_version) == (
        f"turn 1, event {first_turn.originator_version}"
    )
    assert label(stream, 1) == "event 1"  # the task: neither an action nor a turn
