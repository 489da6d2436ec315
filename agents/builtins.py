"""The built-in tools: what tether gives an agent because of how a topology declares it.

An agent that may hand off gets ``handoff``; one with peers, ``send_message``; one with
workers, ``delegate``; one with a bounded working memory, ``page_back``; one watched for
progress, ``record_progress``. Each declares here, once, everything the rest of tether
needs to know about it: the ``Agent`` field that gives it, the rail that field implies,
and what its result means to the gate and to the agent's loop. Nothing else in tether
names a built-in tool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from .tools import Tool, ToolContext

HANDOFF = "handoff"
"""The built-in tool an agent uses to pass control to another agent."""
PAGE_BACK = "page_back"
"""The built-in tool an agent uses to see compacted working memory again."""
PROGRESS = "record_progress"
"""The built-in tool an agent uses to record progress and its best result so far."""
SEND = "send_message"
"""The built-in tool an agent uses to message one of its peers."""
DELEGATE = "delegate"
"""The built-in tool an agent uses to give work to one of its workers (agents as tools)."""


class HandoffArgs(BaseModel):
    """Arguments of the built-in handoff tool."""

    to: str = Field(description="The agent that takes over.")
    reason: str = Field(description="Why it should.")
    note: str = Field(default="", description="What it needs to know.")


def _handoff(args: HandoffArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"to": args.to, "accepted": True, "reason": args.reason, "note": args.note}


def _handoff_verified(args: HandoffArgs, result: dict[str, Any]) -> str | None:
    return None if result.get("to") == args.to else "handoff went to another agent"


handoff = Tool(
    name=HANDOFF,
    description="Pass the task to another agent, with a reason.",
    args=HandoffArgs,
    fn=_handoff,
    read_only=True,
    idempotent=True,
    verify=_handoff_verified,
)
"""The built-in handoff tool; a topology lists the agents each agent may hand off to."""


class PageBackArgs(BaseModel):
    """Arguments of the built-in page_back tool."""

    first: int = Field(ge=1, description="The first event of the compacted range.")
    last: int = Field(ge=1, description="The last event of the compacted range.")


def _page_back(args: PageBackArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"first": args.first, "last": args.last, "messages": ctx.page(args.first, args.last)}


page_back = Tool(
    name=PAGE_BACK,
    description="Show the original messages that a working-memory summary replaced.",
    args=PageBackArgs,
    fn=_page_back,
    read_only=True,
    idempotent=True,
)
"""The built-in page_back tool; agents with a working-memory bound get it."""


class ProgressArgs(BaseModel):
    """Arguments of the built-in record_progress tool."""

    note: str = Field(description="What is done now that was not before.")
    result: dict[str, Any] = Field(
        default_factory=dict, description="The best result so far, as it stands."
    )


def _progress(args: ProgressArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"note": args.note, "result": args.result}


record_progress = Tool(
    name=PROGRESS,
    description=(
        "Record progress on the task and the best result so far; an agent that records "
        "none for too many steps is stopped as stuck."
    ),
    args=ProgressArgs,
    fn=_progress,
    read_only=True,
    idempotent=True,
)
"""The built-in record_progress tool; agents whose topology watches progress get it."""


class SendArgs(BaseModel):
    """Arguments of the built-in send_message tool."""

    to: str = Field(description="The agent to message (one of your peers).")
    body: str = Field(min_length=1, description="What to tell it.")


def _send(args: SendArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"to": args.to, "delivered": True}


send_message = Tool(
    name=SEND,
    description=(
        "Send a message to another agent of the fleet; it reads it before its next model call."
    ),
    args=SendArgs,
    fn=_send,
    read_only=False,  # delivering is its effect: once, under the action's idempotency key
    idempotent=True,
)
"""The built-in send_message tool; a topology lists the peers each agent may message.
The gate delivers the message with the action's record, to the recipient's mailbox."""


class DelegateArgs(BaseModel):
    """Arguments of the built-in delegate tool."""

    to: str = Field(description="The worker that does the work (one of your workers).")
    task: str = Field(min_length=1, description="What it should do, with what it needs to know.")


def _delegate(args: DelegateArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"to": args.to, "delegated": True}


delegate = Tool(
    name=DELEGATE,
    description=(
        "Give a piece of work to one of your workers; its answer comes back as this "
        "call's result. Several calls in one turn give work to several workers."
    ),
    args=DelegateArgs,
    fn=_delegate,
    read_only=True,  # the worker's own actions pass its own gate
    idempotent=True,
)
"""The built-in delegate tool; a topology lists the workers each agent may delegate to.
Its supervisor runs the worker on the task and feeds the answer back to the caller."""


@dataclass(frozen=True)
class Builtin:
    """One built-in tool and what it implies."""

    tool: Tool
    given_by: str
    """The ``Agent`` field that gives an agent this tool (``handoffs``, ``peers``, ...)."""
    given: Callable[[Any], bool]
    """Whether an agent (a ``tether.topologies.Agent``) has it."""
    how: str
    """How a topology gives it, for an error that names a tool the agent lacks."""
    to_named: bool = False
    """Its ``to`` argument must be one of the agents the ``given_by`` field names: a rail
    the gate's boundaries enforce (so naming the agents is the grant)."""
    spawns: bool = False
    """Carrying it out starts another agent's work: checked against spawn budgets."""
    delivers: bool = False
    """Its effect is a message, delivered with the action's record to the recipient."""
    folds: Literal["handoff", "answer", "progress"] | None = None
    """What an executed call means to the agent's loop: it hands control over (the loop
    ends after the turn), its result is a worker's answer that comes later, or it
    records progress (the stuck watch starts again)."""


def _named(field: str) -> Callable[[Any], bool]:
    return lambda agent: bool(getattr(agent, field))


BUILTINS: dict[str, Builtin] = {
    b.tool.name: b
    for b in (
        Builtin(
            handoff,
            "handoffs",
            _named("handoffs"),
            "Agent(handoffs=(...)) naming the agents it may hand off to",
            to_named=True,
            spawns=True,
            folds="handoff",
        ),
        Builtin(
            send_message,
            "peers",
            _named("peers"),
            "Agent(peers=(...)) naming the agents it may message",
            to_named=True,
            delivers=True,
        ),
        Builtin(
            delegate,
            "workers",
            _named("workers"),
            "Agent(workers=(...)) naming the agents it may give work to",
            to_named=True,
            spawns=True,
            folds="answer",
        ),
        Builtin(
            page_back,
            "context_tokens",
            lambda agent: agent.context_tokens is not None,
            "Agent(context_tokens=...) bounding its working memory",
        ),
        Builtin(
            record_progress,
            "stuck",
            lambda agent: getattr(agent.stuck, "no_progress_steps", None) is not None,
            "Agent(stuck=Stuck(no_progress_steps=...))",
            folds="progress",
        ),
    )
}
"""Every built-in tool, by name."""


def builtins_of(agent: Any) -> list[Builtin]:
    """The built-in tools a ``tether.topologies.Agent`` gets from its declaration."""
    return [b for b in BUILTINS.values() if b.given(agent)]


def builtin(name: str) -> Builtin | None:
    """The built-in tool of that name, if it is one."""
    return BUILTINS.get(name)


def folds(tool: str | None) -> str | None:
    """What an executed call of ``tool`` means to an agent's loop (``Builtin.folds``);
    None for any tool that is not built in."""
    found = BUILTINS.get(tool) if tool else None
    return found.folds if found is not None else None
