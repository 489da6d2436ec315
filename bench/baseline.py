"""The baseline the fleet benchmarks measure against: an agent as a Ray actor of its own.

It imports nothing but the standard library, so a Ray worker that loads it pays for Ray
alone, not for tether: the baseline is bare Ray, not Ray plus tether's imports.
"""

from __future__ import annotations

import os
from typing import Any


class OneAgent:
    """An agent as a Ray actor of its own, holding its task and inbox in memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: dict[str, Any] = {}
        self.inbox: list[str] = []

    def start(self, task: dict[str, Any]) -> str:
        """Take the agent's task, as a host actor's ``start`` gives each agent its own."""
        self.task = task
        return self.name

    def ready(self) -> str:
        return self.name

    def deliver(self, episode: Any, to: str, body: str, sender: str) -> int:
        self.inbox.append(body)
        return len(self.inbox)

    def pid(self) -> int:
        """This worker's process id (the benchmark reads its memory)."""
        return os.getpid()
