"""The scripted model: the only fake model, shipped in tether.agents."""

from __future__ import annotations

import pytest

from tether.agents import ModelRequest, ModelTurn, ScriptedModel, ToolCall, call, calls, say
from tether.memory.errors import ModelError, ScriptExhausted


def request(turn: int) -> ModelRequest:
    return ModelRequest(agent="a", turn=turn, messages=(), tools=())


def test_turns_play_back_by_number_with_stable_call_ids() -> None:
    model = ScriptedModel([call("lookup", id_="1"), calls(ToolCall("a", {}), ToolCall("b", {}))])
    assert model.respond(request(0)).tool_calls[0].arguments == {"id_": "1"}
    second = model.respond(request(1))
    assert [c.id for c in second.tool_calls] == ["call_1_0", "call_1_1"]
    # A model rebuilt elsewhere answers the same turn the same way.
    assert ScriptedModel(model.script).respond(request(1)) == second


def test_a_turn_can_react_to_the_request() -> None:
    model = ScriptedModel([lambda r: say(f"turn {r.turn} for {r.agent}")])
    assert model.respond(request(0)).text == "turn 0 for a"


def test_a_scripted_error_is_raised() -> None:
    model = ScriptedModel([ModelError("rate limited")])
    with pytest.raises(ModelError, match="rate limited"):
        model.respond(request(0))


def test_running_past_the_script_is_a_typed_error() -> None:
    with pytest.raises(ScriptExhausted, match="has 1 turn"):
        ScriptedModel([say("only")]).respond(request(1))


def test_assert_complete_names_unused_turns() -> None:
    model = ScriptedModel([say("a"), say("b"), say("c")])
    model.respond(request(0))
    with pytest.raises(AssertionError, match=r"\[1, 2\]"):
        model.assert_complete()
    model.respond(request(1))
    model.respond(request(2))
    model.assert_complete()


def test_a_turn_is_a_plain_value() -> None:
    assert say("hi") == ModelTurn(text="hi", usage=say("hi").usage)


def test_a_tool_argument_may_have_any_name() -> None:
    # A tool that posts a note takes arguments named text and name: they reach the call,
    # they are not taken for the model's own message or the tool's name.
    turn = call("post_note", text="ship it", name="release")
    assert turn.tool_calls == (ToolCall("post_note", {"text": "ship it", "name": "release"}),)
    assert turn.text == ""
    # Arguments can also be given as a dict, and what the model says alongside the call
    # goes in _text, a name no tool argument can have (pydantic fields never start with _).
    turn = call("post_note", {"text": "ship it"}, _text="Posting the note.")
    assert turn.tool_calls == (ToolCall("post_note", {"text": "ship it"}),)
    assert turn.text == "Posting the note."
