"""The handles the supervisor runs agents through: agents in this process (``LocalHost``),
or in a Ray host actor that is started again when it dies (``RayHost``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from tether.agents.loop import AgentOutcome
from tether.memory.errors import HostError, LeaseLost

from .host import Host


class AgentHost(Protocol):
    """Where agents run: a Ray host actor or an in-process ``Host``."""

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        """Run ``agent`` (given ``task``, or the ``answers`` to the work it delegated)
        until it finishes, hands off, waits, delegates or fails; every append it makes
        carries ``fence``, the runner's lease token on the episode."""
        ...

    def replace(self, agent: str) -> None:
        """Start over after the host that runs ``agent`` died: its agents rebuild their
        state from the store."""
        ...

    def lane(self, agent: str) -> str:
        """Which lane runs ``agent``: agents of one lane run one at a time; work for
        agents in different lanes (host actors of their own) may run side by side."""
        ...


class LocalHost:
    """Agents in this process (tests, and tools that need no Ray)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        return self.host.run(episode_id, agent, task, by, answers, fence)

    def replace(self, agent: str | None = None) -> None:
        """An in-process host does not die without its driver."""

    def lane(self, agent: str) -> str:
        return ""  # one process: one agent at a time


class RayHost:
    """Agents in a Ray host actor; ``spawn`` starts a new one when it dies."""

    def __init__(self, spawn: Callable[[], Any]) -> None:
        self.spawn = spawn
        self.actor = spawn()

    def replace(self, agent: str | None = None) -> None:
        import ray

        try:
            ray.kill(self.actor)  # it may be half-dead; make sure it is gone
        except Exception:
            pass
        self.actor = self.spawn()

    def lane(self, agent: str) -> str:
        return ""  # one actor: Ray runs its calls one at a time

    def run(
        self,
        episode_id: uuid.UUID,
        agent: str,
        task: dict[str, Any] | None,
        by: str,
        answers: list[dict[str, Any]] | None = None,
        fence: int | None = None,
    ) -> AgentOutcome:
        import ray

        try:
            call = self.actor.run.remote(episode_id, agent, task, by, answers, fence)
            outcome: AgentOutcome = ray.get(call)
        except ray.exceptions.RayActorError as e:
            raise HostError("host actor", f"died while running {agent!r}: {e}") from e
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, LeaseLost):
                raise e.cause from None  # the store refused it: this runner must stop
            raise
        return outcome
