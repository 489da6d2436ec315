"""A software-delivery gate: is this release safe to ship? Run it with
`tether run examples/release_gate.py` (release r42, green) or
`tether run examples/release_gate.py --task '{"release": "r13", "service": "checkout"}'`
(a failing scorecard).

`scout` gathers the facts into org memory: the release's scorecard, the change freeze and
the service's open incidents, each from a system of record. `gatekeeper` sees exactly
those facts (its memory scopes) and calls `deploy` with them. The policy gate blocks the
deploy unless all pass, and provenance rails make sure each value came from those records,
never from the model's own words. A deploy that passes still waits for a person's
sign-off (high tier).

The scripted models stand in for an LLM offline: the gatekeeper reads the facts it was
shown and passes them on as they are.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from tether import (
    Agent,
    Budget,
    Grant,
    ModelRequest,
    ModelTurn,
    Policy,
    Provenance,
    Role,
    Rule,
    ScriptedModel,
    ToolContext,
    Topology,
    When,
    call,
    pipeline,
    say,
    tool,
)

# The systems of record this example reads (a CI server, a change calendar, a pager).
SCORECARDS = {"r42": "pass", "r13": "fail"}
FREEZE = "none"
INCIDENTS = {"checkout": 0, "search": 2}


class Release(BaseModel):
    release: str


class Service(BaseModel):
    service: str


class Nothing(BaseModel):
    pass


@tool(read_only=True, output="system")
def read_scorecard(args: Release, ctx: ToolContext) -> dict[str, Any]:
    """Read the release's CI scorecard and record it in org memory."""
    result = SCORECARDS.get(args.release, "missing")
    ctx.record_fact(f"release:{args.release}", "scorecard", result)
    return {"release": args.release, "scorecard": result}


@tool(read_only=True, output="system")
def check_freeze(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Read the change calendar's freeze and record it in org memory."""
    ctx.record_fact("freeze:global", "freeze", FREEZE)
    return {"freeze": FREEZE}


@tool(read_only=True, output="system")
def open_incidents(args: Service, ctx: ToolContext) -> dict[str, Any]:
    """Count the service's open incidents and record it in org memory."""
    count = INCIDENTS.get(args.service, 0)
    ctx.record_fact(f"service:{args.service}", "incidents", str(count))
    return {"service": args.service, "incidents": count}


class Deploy(BaseModel):
    release: str
    scorecard: str
    freeze: str
    incidents: int


# Idempotent: deploying a release that is already live changes nothing, and the deploy
# system is given the action's idempotency key.
@tool(destructive=True, open_world=True, idempotent=True)
def deploy(args: Deploy, ctx: ToolContext) -> dict[str, Any]:
    """Deploy the release to production."""
    return {"deployed": args.release, "key": ctx.idempotency_key}


def scout_turn(request: ModelRequest) -> ModelTurn:
    """Gather the three facts for the release and service in the task, then hand off."""
    task = _task(request)
    return ModelTurn(
        tool_calls=(
            *call("read_scorecard", release=task["release"]).tool_calls,
            *call("check_freeze").tool_calls,
            *call("open_incidents", service=task["service"]).tool_calls,
        )
    )


def gatekeeper_turn(request: ModelRequest) -> ModelTurn:
    """Deploy with the facts exactly as org memory holds them."""
    shown = "\n".join(m.content for m in request.messages)
    fact = {k: v for k, v in re.findall(r"^- \S+ (\w+): (\S+) \(fact", shown, re.M)}
    task = _task(request)
    return call(
        "deploy",
        release=task.get("release", ""),
        scorecard=fact.get("scorecard", "missing"),
        freeze=fact.get("freeze", "unknown"),
        incidents=int(fact.get("incidents", "99")),
    )


def _task(request: ModelRequest) -> dict[str, Any]:
    import json

    for m in request.messages:
        if m.role == "user" and m.content.startswith("{"):
            found = json.loads(m.content)
            return dict(found.get("input", found))
    return {}


scout = Agent(
    "scout",
    Role(
        "scout",
        (
            Grant("read_scorecard", tier="low"),
            Grant("check_freeze", tier="low"),
            Grant("open_incidents", tier="low"),
        ),
    ),
    ScriptedModel(
        [scout_turn, call("handoff", to="gatekeeper", reason="facts gathered")], name="scout"
    ),
    (read_scorecard, check_freeze, open_incidents),
    instructions="Gather the release's scorecard, the change freeze and open incidents.",
    budget=Budget(steps=10),
)

gatekeeper = Agent(
    "gatekeeper",
    Role("release manager", (Grant("deploy", tier="high"),)),
    ScriptedModel(
        [gatekeeper_turn, say("deployed after sign-off, or refused by the gate")],
        name="gatekeeper",
    ),
    (deploy,),
    instructions="Deploy the release only when every fact says it is safe.",
    memory=("release:{release}", "freeze:global", "service:{service}"),
    rails=tuple(
        Provenance(tool="deploy", field=f, origins=("system",), source="memory")
        for f in ("scorecard", "freeze", "incidents")
    ),
    budget=Budget(steps=5),
)

topology = Topology(
    "release_gate",
    pipeline("delivery", scout, gatekeeper, budget=Budget(steps=20)),
    policy=Policy(
        rules=(
            Rule(
                "scorecard-green",
                "deny",
                tools=("deploy",),
                when=(When("scorecard", "ne", "pass"),),
                reason="the release's CI scorecard is not green",
            ),
            Rule(
                "no-freeze",
                "deny",
                tools=("deploy",),
                when=(When("freeze", "ne", "none"),),
                reason="a change freeze is on",
            ),
            Rule(
                "no-open-incidents",
                "deny",
                tools=("deploy",),
                when=(When("incidents", "gt", 0),),
                reason="the service has open incidents",
            ),
        )
    ),
)
task = {"release": "r42", "service": "checkout"}
