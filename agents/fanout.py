"""``FanOut``: the model of a fan-out step, which is no model at all.

A map-reduce shape starts with an agent that gives each item of a list to a worker and
hands the answers to a reducer. Splitting a list needs no judgement, so that agent's
"model" is this deterministic function of its context: its first turn delegates one
call per item (spread over the worker copies in turn), its second hands off to the
reducer with every answer and every failure. Being an agent, each delegation still
passes the gate (budget, spawns, policy) and is recorded, so a resumed or re-executed
fan-out goes on from its record like any other agent.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tether.memory.errors import ModelError

from .builtins import DELEGATE, HANDOFF
from .model import Message, ModelRequest, ModelTurn, Price, ToolCall


class FanOut:
    """Splits the list at ``over`` across ``workers`` and hands the answers to ``reducer``."""

    price = Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))
    """It reads and writes no tokens."""

    def __init__(self, over: str, workers: tuple[str, ...], reducer: str) -> None:
        self.over = over
        """Where the list is: a dotted path into the task, the episode input a handoff
        carries, or a handoff note that is a JSON object."""
        self.workers = workers
        self.reducer = reducer

    @property
    def name(self) -> str:
        return "fan-out"

    def respond(self, request: ModelRequest) -> ModelTurn:
        items = self.items(request.messages)
        if request.turn == 0 and items:
            return ModelTurn(
                text=f"{len(items)} items of {self.over!r} to {len(self.workers)} worker(s)",
                tool_calls=tuple(
                    ToolCall(
                        DELEGATE,
                        {
                            "to": self.workers[i % len(self.workers)],
                            "task": json.dumps(
                                {"item": item, "index": i, "of": len(items)}, sort_keys=True
                            ),
                        },
                        id=f"item-{i}",
                    )
                    for i, item in enumerate(items)
                ),
            )
        results, failed = self.gathered(request.messages, items)
        note = json.dumps({"over": self.over, "results": results, "failed": failed}, sort_keys=True)
        return ModelTurn(
            text="",
            tool_calls=(
                ToolCall(
                    HANDOFF,
                    {
                        "to": self.reducer,
                        "reason": f"{len(results)} of {len(items)} items answered, "
                        f"{len(failed)} failed",
                        "note": note,
                    },
                    id="reduce",
                ),
            ),
        )

    def items(self, messages: tuple[Message, ...]) -> list[Any]:
        """The list to fan out, from the task (the first user message)."""
        task = next((m for m in messages if m.role == "user"), None)
        try:
            given = json.loads(task.content) if task is not None else None
        except ValueError:
            given = None
        if not isinstance(given, dict):
            raise ModelError(f"fan-out: its task is not a JSON object; no {self.over!r} to split")
        places: list[Any] = [given, given.get("input")]
        note = given.get("note")
        if isinstance(note, str):
            try:
                places.append(json.loads(note))
            except ValueError:
                pass
        for place in places:
            found = _lookup(place, self.over)
            if isinstance(found, list):
                return found
        raise ModelError(
            f"fan-out: no list at {self.over!r} in its task, the episode input or a handoff "
            f"note; give the episode input a list there (e.g. {{{self.over!r}: [...]}})"
        )

    def gathered(
        self, messages: tuple[Message, ...], items: list[Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each item's answer, or why it has none: its worker failed, or the gate
        refused to delegate it (a spawn budget, a policy)."""
        said = {m.call_id: m.content for m in messages if m.role == "tool"}
        results: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            text = said.get(f"item-{i}")
            try:
                answer = json.loads(text) if text is not None else None
            except ValueError:
                answer = None
            if isinstance(answer, dict) and answer.get("outcome") == "finished":
                results.append(
                    {"index": i, "item": item, "by": answer.get("by"), "answer": answer["answer"]}
                )
            elif isinstance(answer, dict) and "outcome" in answer:
                failed.append(
                    {"index": i, "item": item, "by": answer.get("by"), "reason": answer["answer"]}
                )
            else:
                failed.append({"index": i, "item": item, "by": None, "reason": text or "no answer"})
        return results, failed


def _lookup(place: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(place, dict):
            return None
        place = place.get(part)
    return place
