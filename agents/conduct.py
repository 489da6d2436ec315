"""How one agent works: its instructions and the limits, watches and checks on its loop,
as its topology declares them (``tether.topologies.Agent.conduct``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Verifier = Callable[[str, dict[str, Any]], str | None]
"""Checks an agent's final answer against its task: why it fails, or None."""


@dataclass(frozen=True)
class Conduct:
    """What an agent's loop needs to know of its spec; ``None`` means no limit."""

    instructions: str = ""
    """Its system prompt."""
    max_turns: int = 10
    """Model turns it may take before it must have answered."""
    context_tokens: int | None = None
    """Its working memory's bound; compaction keeps the context under it."""
    stuck_repeats: int | None = None
    """The same call this many times in a row: stuck (the last is refused)."""
    stuck_without_progress: int | None = None
    """This many actions in a row without recorded progress: stuck."""
    stuck_rejections: int | None = None
    """This many rejected answers in a row: stuck."""
    model_attempts: int = 3
    """Model calls a turn may take: the first, and retries after transient failures."""
    backoff_s: float = 0.5
    """The first retry's backoff; each later one doubles, with jitter."""
    max_backoff_s: float = 8.0
    """The longest backoff between two model calls."""
    verifiers: tuple[Verifier, ...] = ()
    """Checks on a final answer; a failure is fed back and the agent goes on."""
    verifier_agents: tuple[str, ...] = ()
    """Agents that check an answer the functions passed (its supervisor runs them): each
    approves by answering ``approve``; any other answer is its reason to reject."""
