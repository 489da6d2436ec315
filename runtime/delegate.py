"""Gate stage 5, execution: a delegate runs the tool, retries transient failures, and
journals side effects under an idempotency key so each happens once.

A tool that is not read-only goes through the effects ledger: if its key is already
there, the recorded result is fed back instead of calling the tool again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import tenacity
from pydantic import BaseModel

from tether.agents.secrets import EnvSecrets, Scrubber, Secrets, reveal
from tether.agents.tools import Tool, ToolContext
from tether.memory.errors import ToolError, TransientToolError
from tether.memory.events import (
    EffectApplied,
    Event,
    effect_stream_id,
)
from tether.memory.org import FactPolicy, OrgMemory
from tether.memory.sources import Clock
from tether.memory.store import Store, new_event


@dataclass(frozen=True)
class Execution:
    """What the delegate did."""

    result: dict[str, Any] | None
    """The tool's result, when it returned one."""
    error: str | None
    """Why it failed, when it did."""
    attempts: int
    """Calls made (1 plus retries); 0 when the ledger answered."""
    effect_key: str | None = None
    """The idempotency key, for tools with a side effect."""
    replayed: bool = False
    """True when the result came from the ledger, not from a call."""
    events: tuple[Event, ...] = field(default=())
    """Ledger events to append with the action's record."""
    tail: tuple[Event, ...] = field(default=())
    """Org-memory events to append with it, at the end of their (shared) streams."""


def idempotency_key(episode_id: uuid.UUID, agent: str, action: int) -> str:
    """The key of one action's side effect: stable across restarts and resumes."""
    return f"{episode_id}/{agent}/{action}"


class Delegate:
    """Runs tools for one agent."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        attempts: int = 3,
        backoff_s: float = 0.05,
        facts: FactPolicy | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.secrets: Secrets = secrets if secrets is not None else EnvSecrets()
        self.scrub = Scrubber(self.secrets)
        """Takes every secret value out of what a tool gives back, before it is recorded."""
        self.store = store
        self.facts = facts or FactPolicy()
        self._org: OrgMemory | None = None
        self.clock = clock
        self.attempts = attempts
        self.backoff_s = backoff_s

    def execute(
        self,
        tool: Tool,
        args: BaseModel,
        *,
        episode_id: uuid.UUID,
        agent: str,
        action: int,
        context: dict[str, Any],
        source_event: str = "",
        page: Callable[[int, int], list[dict[str, Any]]] | None = None,
    ) -> Execution:
        key = idempotency_key(episode_id, agent, action) if tool.has_effect else None
        if key is not None:
            recorded = self.store.read(effect_stream_id(key))
            if recorded and isinstance(recorded[0], EffectApplied):
                return Execution(recorded[0].result, None, 0, key, replayed=True)
        facts: list[_Fact] = []
        ctx = ToolContext(
            episode_id=episode_id,
            agent=agent,
            action=action,
            idempotency_key=key or "",
            context=context,
            record_fact=lambda s, k, t, valid_from=None, valid_to=None: facts.append(
                _Fact(s, k, t, valid_from, valid_to)
            ),
            page=page or (lambda first, last: []),
        )
        attempts = 0

        def once() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            facts.clear()
            out = tool.fn(reveal(args, self.secrets), ctx)  # handles resolved here only
            return self._recordable(tool.name, out, "returned")

        try:
            try:
                result = once()
            except TransientToolError:
                if self.attempts <= 1:
                    raise
                # Only a failed first attempt pays for the retry machinery; the first
                # retry waits too.
                time.sleep(min(2.0, self.backoff_s))
                retrying = tenacity.Retrying(
                    stop=tenacity.stop_after_attempt(self.attempts - 1),
                    wait=tenacity.wait_exponential(multiplier=self.backoff_s * 2, max=2.0),
                    retry=tenacity.retry_if_exception_type(TransientToolError),
                    reraise=True,
                )
                result = retrying(once)
        except Exception as e:  # a tool's failure is an outcome of the action, not a crash
            return Execution(None, self.scrub.text(f"{type(e).__name__}: {e}"), attempts, key)
        return Execution(
            result,
            None,
            attempts,
            key,
            events=self.effect(key, tool, args, result, episode_id, agent, action),
            tail=self._facts(facts, episode_id, agent, action, source_event),
        )

    def effect(
        self,
        key: str | None,
        tool: Tool,
        args: BaseModel,
        result: dict[str, Any],
        episode_id: uuid.UUID,
        agent: str,
        action: int,
    ) -> tuple[Event, ...]:
        """The effects-ledger entry of a side effect that happened (none without a key)."""
        if key is None:
            return ()
        return (
            new_event(
                EffectApplied,
                effect_stream_id(key),
                1,
                self.clock.now(),
                key=key,
                episode_id=episode_id,
                agent=agent,
                action=action,
                tool=tool.name,
                arguments=args.model_dump(mode="json"),
                result=result,
            ),
        )

    def reconcile(
        self,
        tool: Tool,
        args: BaseModel,
        *,
        episode_id: uuid.UUID,
        agent: str,
        action: int,
        context: dict[str, Any],
    ) -> Execution | None:
        """Ask the outside system, through the tool's ``reconcile``, whether the effect of
        an attempt a crash cut short happened: its result (with its ledger entry) if it
        did, None if it did not; an ``error`` if the question itself failed."""
        assert tool.reconcile is not None
        key = idempotency_key(episode_id, agent, action)
        ctx = ToolContext(
            episode_id=episode_id,
            agent=agent,
            action=action,
            idempotency_key=key,
            context=context,
            record_fact=lambda *a, **k: None,  # facts come from a run, not a question
        )
        try:
            out = tool.reconcile(reveal(args, self.secrets), ctx)
            if out is None:
                return None
            result = self._recordable(tool.name, out, "reconcile returned")
        except Exception as e:
            return Execution(None, self.scrub.text(f"{type(e).__name__}: {e}"), 0, key)
        return Execution(
            result,
            None,
            0,
            key,
            events=self.effect(key, tool, args, result, episode_id, agent, action),
        )

    def _recordable(self, tool: str, out: object, said: str) -> dict[str, Any]:
        """A tool's result as it is recorded (secrets scrubbed); ``ToolError`` for one the
        store cannot encode, naming the value's type and where it is."""
        if isinstance(out, BaseModel):
            out = out.model_dump(mode="json")
        if not isinstance(out, dict):
            raise ToolError(tool, f"{said} {type(out).__name__}; return a dict or a pydantic model")
        found = _unencodable(out, "result")
        if found is not None:
            raise ToolError(
                tool,
                f"{said} a {found[1]} at {found[0]}, which cannot be recorded; return JSON "
                "values (strings, numbers, booleans, None, lists, dicts with string keys), "
                "UUIDs, Decimals or datetimes",
            )
        return dict(self.scrub(out))

    def _facts(
        self,
        facts: list[_Fact],
        episode_id: uuid.UUID,
        agent: str,
        action: int,
        source_event: str,
    ) -> tuple[Event, ...]:
        # Many agents write facts about one subject: the store places each at the end of the
        # subject's stream when it commits (position 0 in these events is a placeholder).
        if not facts:
            return ()
        if self._org is None:
            self._org = OrgMemory(self.store)  # made once: it checks its tables on creation
        org = self._org
        source = {
            "episode": str(episode_id),
            "agent": agent,
            "action": action,
            "event": source_event,
        }
        return tuple(
            e
            for f in facts
            for e in org.offer(
                self.scrub.text(f.subject),
                self.scrub.text(f.key),
                self.scrub.text(f.statement),
                source,
                self.clock.now(),
                self.facts,
                valid_from=f.valid_from,
                valid_to=f.valid_to,
            )
        )


_LEAVES = (str, int, float, bool, type(None), uuid.UUID, Decimal, datetime)
"""Values the store's transcoder records as they are."""


def _unencodable(value: object, where: str) -> tuple[str, str] | None:
    """Where in ``value`` something the store cannot record is, and its type's name."""
    if isinstance(value, _LEAVES):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} (key {k!r})", f"{type(k).__name__} key"
            found = _unencodable(v, f"{where}[{k!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _unencodable(v, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return where, type(value).__name__


@dataclass(frozen=True)
class _Fact:
    subject: str
    key: str
    statement: str
    valid_from: datetime | None
    valid_to: datetime | None
