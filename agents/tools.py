"""Tools: declared once, with a pydantic argument schema and MCP-style annotations.

A tool function takes its validated arguments and a ``ToolContext`` and returns a
pydantic model or a dict. It never sees raw model output: the gate validates first.
"""

from __future__ import annotations

import inspect
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from .model import ToolSpec


class FactSink(Protocol):
    """Where a tool writes org-memory facts; they are recorded with the tool's effect."""

    def __call__(
        self,
        subject: str,
        key: str,
        statement: str,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class ToolContext:
    """What the delegate hands a tool at execution time."""

    episode_id: uuid.UUID
    """The episode."""
    agent: str
    """The calling agent."""
    action: int
    """The action's number in the agent's stream."""
    idempotency_key: str
    """Pass this to any external system that takes one; the ledger also dedupes by it."""
    context: dict[str, Any]
    """Trusted structured data of the episode (records from systems, not from text)."""
    record_fact: FactSink
    """Record a fact in org memory (written atomically with the tool's effect)."""
    page: Callable[[int, int], list[dict[str, Any]]] = field(
        default=lambda first, last: [], repr=False
    )
    """The original messages of the agent's events ``first``..``last`` (for page_back)."""


ToolFn = Callable[[Any, ToolContext], BaseModel | dict[str, Any]]
Verifier = Callable[[Any, dict[str, Any]], str | None]
"""A post-condition: given the arguments and the result, a failure reason or None."""
Reconciler = Callable[[Any, ToolContext], BaseModel | dict[str, Any] | None]
"""Asks the outside system whether the effect under ``ctx.idempotency_key`` happened: its
result if it did, None if it did not."""


@dataclass(frozen=True)
class Tool:
    """A tool an agent may be granted."""

    name: str
    """Its name, as the model calls it."""
    description: str
    """What it does, as the model reads it."""
    args: type[BaseModel]
    """The pydantic schema of its arguments."""
    fn: ToolFn = field(repr=False)
    """The function that does the work, run only by the gate's delegate."""
    read_only: bool = False
    """It changes nothing in the world (MCP readOnlyHint)."""
    destructive: bool = False
    """It may destroy or move something of value (MCP destructiveHint)."""
    idempotent: bool = False
    """Calling it twice with the same arguments has no extra effect (MCP idempotentHint),
    typically because it passes ``ctx.idempotency_key`` on to the outside system: an
    attempt a crash cut short is simply run again."""
    reconcile: Reconciler | None = field(default=None, repr=False)
    """After a crash cut an attempt short: asks the outside system whether the effect
    happened (its result is recorded instead of a second run) or not (it runs again). A
    tool with a side effect that is neither idempotent nor reconciles is not run again
    without a person."""
    open_world: bool = False
    """It reaches systems outside the fleet's control (MCP openWorldHint)."""
    verify: Verifier | None = field(default=None, repr=False)
    """Post-condition checked on every result before anything builds on it."""
    output: Literal["system", "untrusted"] = "untrusted"
    """Where its results come from, for argument provenance: ``system`` for structured
    records of a system tether's operator controls (an order database), ``untrusted`` for
    anything a third party wrote (emails, web pages, documents, tickets)."""

    def spec(self) -> ToolSpec:
        """The tool as a model sees it."""
        return ToolSpec(self.name, self.description, self.args.model_json_schema())

    @property
    def has_effect(self) -> bool:
        """Whether a call must go through the effects ledger (anything not read-only)."""
        return not self.read_only

    @property
    def rerunnable(self) -> bool:
        """Whether an attempt a crash cut short may simply run again."""
        return self.read_only or self.idempotent


def tool(
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
    verify: Verifier | None = None,
    name: str | None = None,
    output: Literal["system", "untrusted"] = "untrusted",
    reconcile: Reconciler | None = None,
) -> Callable[[ToolFn], Tool]:
    """Declare a tool from a function ``fn(args: ArgsModel, ctx: ToolContext)``.

    The argument schema is the annotation of the first parameter; the description is the
    docstring's first line. A tool runs at least once per action: if a crash cuts an
    attempt short, ``idempotent=True`` runs it again, ``reconcile=fn`` first asks whether
    the effect happened, and a tool with neither waits for a person.
    """

    def wrap(fn: ToolFn) -> Tool:
        params = list(inspect.signature(fn).parameters)
        hints = typing.get_type_hints(fn)
        args = hints.get(params[0]) if params else None
        if not (isinstance(args, type) and issubclass(args, BaseModel)):
            raise TypeError(f"tool {fn.__name__}: first parameter must be a pydantic model")
        doc = (fn.__doc__ or "").strip().splitlines()
        return Tool(
            name=name or fn.__name__,
            description=doc[0] if doc else fn.__name__,
            args=args,
            fn=fn,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
            verify=verify,
            output=output,
            reconcile=reconcile,
        )

    return wrap
