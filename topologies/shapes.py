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
- ``supervisor_workers``: a manager that gives work to workers as tools (``delegate``)
  and gets their answers back as the calls' results.
- ``map_reduce``: each item of a list to a worker (over several copies of it), then
  every answer, and every failure, to a reducer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from tether.agents.builtins import HANDOFF
from tether.agents.fanout import FanOut
from tether.memory.errors import TopologyError

from ._shapecheck import type_problems
from .rails import RateLimit
from .spec import Agent, Budget, Role, Stuck, Supervisor, entry_agent

FOREVER_S = 10 * 365 * 24 * 3600.0
"""A rate-limit window longer than any episode: a cap per episode."""

F = TypeVar("F", bound=Callable[..., Supervisor])


def _shape(build: F) -> F:
    """A builder that raises only ``TopologyError``: a part with a field of the wrong
    kind (which the builder tripped over before validation could name it) is reported
    with its place and the kind it needs."""

    @functools.wraps(build)
    def guarded(name: Any, *parts: Any, **kw: Any) -> Supervisor:
        try:
            return build(name, *parts, **kw)
        except TopologyError:
            raise
        except Exception as e:
            label = name if isinstance(name, str) and name else build.__name__
            found = [
                problem
                for i, part in enumerate((*parts, *kw.values()))
                if isinstance(part, Agent | Supervisor)
                for problem in type_problems(part, type(part), f"{label}[{i}]")
            ]
            raise TopologyError(
                found
                or [f"{label}: could not build the {build.__name__} ({type(e).__name__}: {e})"]
            ) from None

    return cast(F, guarded)


@_shape
def pipeline(name: str, *stages: Agent | Supervisor, **supervisor: Any) -> Supervisor:
    """Stages that hand the work on in order: each may hand off to the next only, and
    is told so; the last one's answer ends the pipeline. The last stage may be a shape
    (a planner, then a ``map_reduce``): the stage before hands off to its entry agent.
    ``supervisor``: the keyword arguments of the ``Supervisor`` (budget, restarts,
    role)."""
    _agents(name, "stages", stages[:-1])
    _children(name, "stages", stages[-1:])
    wired: list[Agent | Supervisor] = []
    for i, stage in enumerate(stages):
        if i + 1 < len(stages):
            assert isinstance(stage, Agent)
            after = entry_agent(stages[i + 1])
            stage = _also(
                stage,
                handoffs=(after,),
                instructions=f"When your part is done, hand off to {after} with a note of "
                "what you did and what is left.",
            )
        wired.append(stage)
    return Supervisor(name, tuple(wired), entry=stages[0].name, **supervisor)


@_shape
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


@_shape
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


@_shape
def supervisor_workers(
    name: str, manager: Agent, *workers: Agent | Supervisor, **supervisor: Any
) -> Supervisor:
    """A manager that delegates to workers as tools: each ``delegate`` call gives one
    worker (or a shape's entry agent) a task, the supervisor runs it, and its answer, or
    its failure once its restarts are spent, comes back as the call's result. Calls in
    one turn are all answered before the manager's next turn."""
    _agents(name, "manager", (manager,))
    _children(name, "workers", workers)
    entries = tuple(entry_agent(w) for w in workers)
    boss = _also(
        manager,
        handoffs=(),
        workers=entries,
        instructions="Give work to your workers with delegate ("
        + ", ".join(map(str, entries))
        + "); "
        "each answer comes back as that call's result. Answer once you have what you need.",
    )
    return Supervisor(name, (boss, *workers), entry=manager.name, **supervisor)


@_shape
def map_reduce(
    name: str,
    worker: Agent | Supervisor,
    reducer: Agent | Supervisor,
    *,
    over: str,
    copies: int = 1,
    **supervisor: Any,
) -> Supervisor:
    """Each item of the list at ``over`` to a worker, then every answer to ``reducer``.

    The fan-out step is an agent of its own (``{name}.split``) whose model is
    ``FanOut``: no tokens, no judgement, and every delegation through the gate. It finds
    the list in its task, the episode input, or a JSON handoff note, and spreads the
    items over ``copies`` of the worker (``{worker}-1`` ...; a shape as worker takes
    one copy). Workers on hosts of their own (``isolated=True``) run their items side by
    side; on a shared host they take turns. Each item reaches its worker as the task
    ``{"item", "index", "of"}``; the reducer gets the handoff note ``{"over",
    "results": [{"index", "item", "by", "answer"}], "failed": [{"index", "item", "by",
    "reason"}]}``: an item whose worker failed for good, or that the gate would not
    delegate (a spawn budget, a policy), is reported, not lost."""
    _children(name, "worker, reducer", (worker, reducer))
    problems = []
    if not isinstance(over, str) or not over.strip():
        problems.append(f"{name}.over: must name where the list is, e.g. 'questions'")
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
        problems.append(f"{name}.copies: must be a positive integer, got {copies!r}")
    elif copies > 1 and not isinstance(worker, Agent):
        problems.append(f"{name}.copies: only an Agent worker can be copied; give copies=1")
    limits = supervisor.get("budget", Budget())
    spawns = limits.spawns if isinstance(limits, Budget) else None
    if type(spawns) is int and type(copies) is int and spawns < copies + 2:
        problems.append(
            f"{name}.budget.spawns: {spawns} cannot start the split step, {copies} "
            f"cop{'y' if copies == 1 else 'ies'} of the worker and the reducer; give at "
            f"least {copies + 2}, or fewer copies"
        )
    if problems:
        raise TopologyError(problems)
    if copies > 1:
        assert isinstance(worker, Agent)
        crew: tuple[Agent | Supervisor, ...] = tuple(
            dataclasses.replace(worker, name=f"{worker.name}-{i}") for i in range(1, copies + 1)
        )
    else:
        crew = (worker,)
    entries = tuple(entry_agent(w) for w in crew)
    split = Agent(
        name=f"{name}.split",
        role=Role(f"{name}.split"),
        model=FanOut(over, entries, entry_agent(reducer)),
        instructions=f"Give each item of {over!r} to a worker, then every answer to "
        f"{entry_agent(reducer)}.",
        workers=entries,
        handoffs=(entry_agent(reducer),),
        # Its steps are one per item and a handoff: bound only by the shape's own budget.
        budget=Budget(steps=limits.steps, tokens=limits.tokens, cost=limits.cost)
        if isinstance(limits, Budget)
        else Budget(),
        max_turns=3,
        stuck=Stuck(repeats=None, rejected_answers=None),
        restart="temporary",  # it decides nothing a restart could change
    )
    return Supervisor(name, (split, *crew, reducer), entry=split.name, **supervisor)


def _children(name: str, field: str, given: tuple[Any, ...]) -> None:
    """Every part is an Agent or a shape (a Supervisor); report all that are not."""
    if not given:
        raise TopologyError([f"{name}.{field}: a shape needs at least one"])
    wrong = [
        f"{name}.{field}[{i}]: must be an Agent or a Supervisor (a shape), got {type(a).__name__}"
        for i, a in enumerate(given)
        if not isinstance(a, Agent | Supervisor)
    ]
    if wrong:
        raise TopologyError(wrong)


def _also(agent: Agent, *, handoffs: tuple[str, ...], instructions: str, **more: Any) -> Agent:
    """The agent with the shape's handoff targets, a line of instructions and rails
    added to its own."""
    joined = tuple(dict.fromkeys((*agent.handoffs, *handoffs)))
    text = f"{agent.instructions}\n\n{instructions}" if agent.instructions else instructions
    rails = (*agent.rails, *more.pop("rails", ()))
    if "workers" in more:
        more["workers"] = tuple(dict.fromkeys((*agent.workers, *more["workers"])))
    return dataclasses.replace(agent, handoffs=joined, instructions=text, rails=rails, **more)


def _agents(name: str, field: str, given: tuple[Any, ...]) -> None:
    """Every stage of a shape is an Agent (nest shapes by making them children of a
    supervisor); report all that are not, with their places."""
    if not given and field != "stages":
        raise TopologyError([f"{name}.{field}: a shape needs at least one agent"])
    hint = (
        "; only a pipeline's last stage may be a shape"
        if field == "stages"
        else "; nest a shape as a child of a Supervisor instead"
    )
    wrong = [
        f"{name}.{field}[{i}]: must be an Agent, got {type(a).__name__}"
        + (hint if isinstance(a, Supervisor) else "")
        for i, a in enumerate(given)
        if not isinstance(a, Agent)
    ]
    if wrong:
        raise TopologyError(wrong)
