"""The ``Model`` protocol: what an agent asks a model, and what comes back.

A model is a commodity input. Any provider fits behind ``respond``; ``ScriptedModel`` is
the one fake, for tests and demos. Requests carry the turn number so a model that is
rebuilt in a new process (a resumed episode) answers the same turn the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """One tool call a model asked for."""

    name: str
    """The tool's name."""
    arguments: dict[str, Any]
    """Its arguments, as the model gave them (untrusted)."""
    id: str = ""
    """The model's id for the call; tool results answer it."""


@dataclass(frozen=True)
class Usage:
    """Tokens a model reported for one turn."""

    input_tokens: int = 0
    """Tokens in the prompt."""
    output_tokens: int = 0
    """Tokens generated."""


@dataclass(frozen=True)
class Price:
    """What a model's tokens cost, in dollars per million tokens."""

    input_per_mtok: Decimal
    """Dollars per million prompt tokens."""
    output_per_mtok: Decimal
    """Dollars per million generated tokens."""

    def cost(self, usage: Usage) -> Decimal:
        """The dollars one turn's usage cost."""
        return (
            usage.input_tokens * Decimal(self.input_per_mtok)
            + usage.output_tokens * Decimal(self.output_per_mtok)
        ) / 1_000_000

    def estimate(self, input_tokens: int) -> Decimal:
        """The least a call with ``input_tokens`` of context can cost (its prompt alone)."""
        return input_tokens * Decimal(self.input_per_mtok) / 1_000_000


@dataclass(frozen=True)
class ModelTurn:
    """A model's answer to one request: text, tool calls, or both."""

    text: str = ""
    """What the model said; the agent's final answer when there are no tool calls."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools it wants used, in order."""
    usage: Usage = field(default_factory=Usage)
    """What the turn cost in tokens."""


@dataclass(frozen=True)
class Message:
    """One message of the context a model sees."""

    role: Role
    """Who speaks."""
    content: str
    """What is said."""
    tool_calls: tuple[ToolCall, ...] = ()
    """For an assistant message: the calls it made."""
    call_id: str | None = None
    """For a tool message: the call it answers."""
    event: int = 0
    """The position in the agent's stream of the event that produced it (0: none)."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model sees it."""

    name: str
    """The tool's name."""
    description: str
    """What it does."""
    parameters: dict[str, Any]
    """JSON schema of its arguments."""


@dataclass(frozen=True)
class ModelRequest:
    """Everything a model is given for one turn."""

    agent: str
    """The asking agent."""
    turn: int
    """The turn's number within the agent's task, from 0."""
    messages: tuple[Message, ...]
    """The context, oldest first."""
    tools: tuple[ToolSpec, ...]
    """The tools the agent may call."""


@runtime_checkable
class Model(Protocol):
    """Anything that answers a ``ModelRequest`` with a ``ModelTurn``."""

    @property
    def name(self) -> str:
        """The model's name, as recorded (``scripted``, ``gpt-4.1`` ...)."""
        ...

    def respond(self, request: ModelRequest) -> ModelTurn:
        """Answer one turn. Raises ``ModelError`` when no answer can be had."""
        ...
