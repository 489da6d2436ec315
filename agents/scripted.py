"""``ScriptedModel``: the one fake model, shipped for tests and demos.

A script is a list of turns, one per model call of the agent's task: a ``ModelTurn``, a
function of the request that returns one, or an exception to raise. The turn number in
the request picks the entry, so a model rebuilt in another process (a resumed episode)
continues where the recorded history stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tether.memory.errors import ScriptExhausted, TransientModelError

from .model import ModelRequest, ModelTurn, ToolCall, Usage

ScriptEntry = ModelTurn | Callable[[ModelRequest], ModelTurn] | BaseException


def say(text: str) -> ModelTurn:
    """A turn that answers with text and calls no tool."""
    return ModelTurn(text=text, usage=Usage(input_tokens=0, output_tokens=len(text.split())))


def call(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    /,
    *,
    _text: str = "",
    **keywords: Any,
) -> ModelTurn:
    """A turn that calls one tool with ``arguments`` and ``keywords``, whatever their names:
    ``call("pay", to="acme@example.com")``, ``call("post", {"text": "hi"})``. What the model
    says alongside the call is ``_text``, a name no tool argument can have (pydantic fields
    never start with an underscore)."""
    return calls(ToolCall(name=name, arguments={**(arguments or {}), **keywords}), text=_text)


def calls(*tool_calls: ToolCall, text: str = "") -> ModelTurn:
    """A turn that calls several tools in order."""
    return ModelTurn(text=text, tool_calls=tuple(tool_calls))


def flaky(turn: ScriptEntry, failures: int, reason: str = "503 from the provider") -> ScriptEntry:
    """A turn whose first ``failures`` calls fail as a provider failing for a while would
    (``TransientModelError``); the call after them answers with ``turn``."""
    failed = [0]

    def respond(request: ModelRequest) -> ModelTurn:
        if failed[0] < failures:
            failed[0] += 1
            raise TransientModelError(f"{reason} (attempt {failed[0]})")
        if isinstance(turn, BaseException):
            raise turn
        return turn(request) if callable(turn) else turn

    return respond


class ScriptedModel:
    """A model that plays back a script, turn by turn."""

    def __init__(self, script: Sequence[ScriptEntry], name: str = "scripted") -> None:
        self.script = tuple(script)
        self._name = name
        self.used: set[int] = set()

    @property
    def name(self) -> str:
        return self._name

    def respond(self, request: ModelRequest) -> ModelTurn:
        if request.turn >= len(self.script):
            raise ScriptExhausted(request.agent, request.turn, len(self.script))
        self.used.add(request.turn)
        entry = self.script[request.turn]
        if isinstance(entry, BaseException):
            raise entry
        turn = entry(request) if callable(entry) else entry
        # Give every call a stable id, so a replayed turn answers the same calls.
        numbered = tuple(
            c if c.id else replace(c, id=f"call_{request.turn}_{i}")
            for i, c in enumerate(turn.tool_calls)
        )
        return replace(turn, tool_calls=numbered)

    def assert_complete(self) -> None:
        """Fail if any scripted turn was never asked for."""
        unused = sorted(set(range(len(self.script))) - self.used)
        if unused:
            raise AssertionError(f"scripted turns never used: {unused} of {len(self.script)}")
