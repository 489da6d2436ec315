"""Working memory: the context an agent's model sees, bounded in tokens, compacted by events.

The context is a fold of the agent's stream: its instructions and task, then each model
turn and each tool result, every message tagged with the stream position that produced
it. When the context passes the agent's bound, the oldest turns (an assistant message with
its tool results, never split) are replaced by one summary message that names the event
range it replaced; that is a ``ContextCompacted`` event, so the fold, and therefore any
rebuild, replays it at the same point. ``page_back`` brings the originals back.

Tokens are estimated, not counted: ``ceil(characters / 4)`` per message plus 4 for its
framing (OpenAI's rule of thumb; no tokenizer is needed, and the estimate is the same on
every machine, which a replay needs).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Message

KEEP = 0.7
"""After a compaction the context holds at most this share of its bound (Letta keeps ~70%)."""


def tokens(message: Message) -> int:
    """The estimated tokens of one message."""
    calls = (
        json.dumps([[c.name, c.arguments] for c in message.tool_calls], sort_keys=True, default=str)
        if message.tool_calls
        else ""
    )
    return math.ceil((len(message.content) + len(calls)) / 4) + 4


def total(messages: Sequence[Message]) -> int:
    """The estimated tokens of a context."""
    return sum(tokens(m) for m in messages)


def digest(messages: Sequence[Message]) -> str:
    """A fingerprint of exactly what a model was shown."""
    canon = [
        [m.role, m.content, [[c.id, c.name, c.arguments] for c in m.tool_calls], m.call_id]
        for m in messages
    ]
    return hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Compaction:
    """A plan to replace the messages of an event range with a summary."""

    first: int
    """The first stream position replaced."""
    last: int
    """The last stream position replaced."""
    summary: str
    """The summary message's text."""


PINNED = 2
"""The instructions and the task are never compacted."""


def plan(messages: Sequence[Message], bound: int) -> Compaction | None:
    """What to compact so the context fits ``KEEP`` of ``bound``; None if it already fits
    or nothing can go (only the pinned messages and the latest turn are left)."""
    if total(messages) <= bound:
        return None
    groups: list[list[Message]] = []
    for m in messages[PINNED:]:
        if m.role == "tool" and groups:
            groups[-1].append(m)
        else:
            groups.append([m])
    target = int(bound * KEEP)
    size = total(messages)
    gone: list[Message] = []
    for group in groups[:-1]:  # the latest turn always stays
        if size <= target:
            break
        gone += group
        size -= total(group)
    gone = [m for m in gone if m.event]
    if not gone:
        return None
    first, last = gone[0].event, gone[-1].event
    return Compaction(first, last, summarize(gone, first, last))


def summarize(messages: Sequence[Message], first: int, last: int) -> str:
    """A deterministic summary: what each replaced message was, briefly."""
    parts = []
    for m in messages:
        if m.tool_calls:
            parts.append(
                "called "
                + ", ".join(
                    f"{c.name}({json.dumps(c.arguments, sort_keys=True, default=str)[:60]})"
                    for c in m.tool_calls
                )
            )
        elif m.role == "tool":
            parts.append(f"got {m.content[:60]}")
        elif m.content:
            parts.append(f"{m.role} said {m.content[:60]!r}")
    return (
        f"[working memory compacted: events {first}-{last}, {len(messages)} messages; "
        f"page_back(first={first}, last={last}) shows them again] " + "; ".join(parts)
    )


def compact(messages: list[Message], first: int, last: int, summary: str) -> list[Message]:
    """``messages`` with those of events ``first``..``last`` replaced by the summary."""
    out: list[Message] = []
    placed = False
    for m in messages:
        if m.event and first <= m.event <= last:
            if not placed:
                out.append(Message("system", summary, event=first))
                placed = True
            continue
        out.append(m)
    return out
