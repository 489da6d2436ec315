"""Shapes people build fleets from, each a small builder over the same supervisor tree.

A shape returns a ``Supervisor``: it can be a fleet's root, or a child of another
supervisor or shape (shapes nest). The builders only wire what the shape means — who may
hand off to whom, who starts, and the one rail a loop needs — onto the agents given;
everything else (roles, budgets, rails, restarts) stays the user's, and the topology is
validated as a whole when it is built, like any other.

- ``pipeline``: sequential handoff; each stage hands its work to the next, the last
  answers.
- ``swarm``: agents pass control to each other, with a reason, until one answers.
- ``critic_loop``: a worker and a reviewer, back and forth until the reviewer approves
  (it answers) or the rounds run out (it may not send the work back again).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tether.agents.tools import HANDOFF
from tether.runtime.errors import TopologyError

from .spec import Agent, RateLimit, Supervisor

FOREVER_S = 10 * 365 * 24 * 3600.0
"""A rate-limit window longer than any episode: a cap per episode."""


def pipeline(name: str, *stages: Agent, **supervisor: Any) -> Supervisor:
    """Stages that hand the work on in order: each may hand off to the next only, and
    is told so; the last one's answer ends the pipeline. ``supervisor``: the keyword
    arguments of the ``Supervisor`` (budget, restarts, role)."""
    _agents(name, "stages", stages)
    wired = []
    for i, stage in enumerate(stages):
        if i + 1 < len(stages):
            after = stages[i + 1].name
            stage = _also(
                stage,
                handoffs=(after,),
                instructions=f"When your part is done, hand off to {after} with a note of "
                "what you did and what is left.",
            )
        wired.append(stage)
    return Supervisor(name, tuple(wired), entry=stages[0].name if stages else None, **supervisor)


def swarm(name: str, *agents: Agent, entry: str | None = None, **supervisor: Any) -> Supervisor:
    """Agents that may each hand off to any other, with a reason, until one answers;
    ``entry`` (default: the first) takes the work first."""
    _agents(name, "agents", agents)
    names = [a.name for a in agents]
    wired = tuple(
        _also(
            a,
            handoffs=tuple(n for n in names if n != a.name),
            instructions="If another agent is better placed to answer, hand off to it with "
            "the reason.",
        )
        for a in agents
    )
    return Supervisor(name, wired, entry=entry or (names[0] if names else None), **supervisor)


def critic_loop(
    name: str, worker: Agent, reviewer: Agent, *, rounds: int = 3, **supervisor: Any
) -> Supervisor:
    """A worker hands its draft to a reviewer, who approves it by answering, or hands it
    back with what to change; after ``rounds`` drafts the reviewer may not send it back
    again (a rail on its handoffs), so it must answer: approve, or say why not."""
    _agents(name, "worker, reviewer", (worker, reviewer))
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise TopologyError([f"{name}.rounds: must be a positive integer, got {rounds!r}"])
    drafts = _also(
        worker,
        handoffs=(reviewer.name,),
        instructions=f"Hand each draft to {reviewer.name} for review; work its feedback "
        "into the next draft.",
    )
    if rounds == 1:
        review = _also(
            reviewer, handoffs=(), instructions="Answer: approve the draft, or say why not."
        )
    else:
        review = _also(
            reviewer,
            handoffs=(worker.name,),
            instructions=f"Approve a draft by answering with it. Otherwise hand it back to "
            f"{worker.name} with what to change; after {rounds} drafts you must answer.",
            rails=(RateLimit(tool=HANDOFF, calls=rounds - 1, per_s=FOREVER_S),),
        )
    return Supervisor(name, (drafts, review), entry=worker.name, **supervisor)


def _also(agent: Agent, *, handoffs: tuple[str, ...], instructions: str, **more: Any) -> Agent:
    """The agent with the shape's handoff targets, a line of instructions and rails
    added to its own."""
    joined = tuple(dict.fromkeys((*agent.handoffs, *handoffs)))
    text = f"{agent.instructions}\n\n{instructions}" if agent.instructions else instructions
    rails = (*agent.rails, *more.pop("rails", ()))
    return dataclasses.replace(agent, handoffs=joined, instructions=text, rails=rails, **more)


def _agents(name: str, field: str, given: tuple[Any, ...]) -> None:
    """Every stage of a shape is an Agent (nest shapes by making them children of a
    supervisor); report all that are not, with their places."""
    if not given:
        raise TopologyError([f"{name}.{field}: a shape needs at least one agent"])
    wrong = [
        f"{name}.{field}[{i}]: must be an Agent, got {type(a).__name__}"
        + ("; nest a shape as a child of a Supervisor instead" if isinstance(a, Supervisor) else "")
        for i, a in enumerate(given)
        if not isinstance(a, Agent)
    ]
    if wrong:
        raise TopologyError(wrong)
