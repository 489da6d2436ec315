"""A research fan-out: run it with `tether run examples/research_fanout.py`.

A map-reduce. Its split step gives each question to one of two copies of `researcher`,
which searches an offline corpus and answers with a citation; a verifier rejects an
answer that cites nothing, and a researcher that cannot cite a source fails. Every
answer, and every question that failed, goes to the reducer: a critic loop where `writer`
drafts the report and `critic` sends it back once, asking for the open questions to be
named, before it approves. No question is lost: one the researchers could not answer is
in the report as open, with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from tether import (
    Agent,
    Budget,
    Grant,
    ModelRequest,
    ModelTurn,
    Role,
    ScriptedModel,
    Stuck,
    ToolContext,
    Topology,
    call,
    critic_loop,
    map_reduce,
    say,
    tool,
)

CORPUS = {
    "How long does a cold start of the service take?": (
        "ops-handbook#cold-start",
        "A cold start takes 40 s, most of it loading the model weights.",
    ),
    "Which regions serve the EU customers?": (
        "infra-map#eu",
        "EU customers are served from Frankfurt and Dublin.",
    ),
}


class Query(BaseModel):
    query: str


@tool(read_only=True)
def search(args: Query, ctx: ToolContext) -> dict[str, Any]:
    """Search the internal docs; returns the best passage and its source, if any."""
    found = CORPUS.get(args.query)
    if found is None:
        return {"source": None, "passage": None}
    source, passage = found
    return {"source": source, "passage": passage}


def question(request: ModelRequest) -> str:
    """The question a researcher's task carries (the split step's ``{"item", ...}``)."""
    task = json.loads(request.messages[1].content)
    return str(json.loads(task["task"])["item"])


def look_up(request: ModelRequest) -> ModelTurn:
    return call("search", query=question(request))


def answer(request: ModelRequest) -> ModelTurn:
    found = json.loads(request.messages[-1].content)
    if found.get("source") is None:
        return say("I found nothing on this.")
    return say(f"{found['passage']} [source: {found['source']}]")


def cites_a_source(answer: str, task: dict[str, Any]) -> str | None:
    """A finding without a source is not a finding."""
    return None if "[source: " in answer else "the answer cites no source"


researcher = Agent(
    "researcher",
    Role("researcher", (Grant("search", tier="low"),)),
    ScriptedModel([look_up, answer], name="researcher"),
    (search,),
    instructions="Answer the question from the docs, citing the source as [source: ...].",
    verifiers=(cites_a_source,),
    stuck=Stuck(rejected_answers=1),  # one uncited answer and it gives up on the question
    restart="temporary",  # a restart would find no more in the docs
    budget=Budget(steps=4),
)


def draft(request: ModelRequest) -> ModelTurn:
    task = json.loads(request.messages[1].content)
    if task.get("handoff_from") == "critic":  # a revision: the critic sent it back
        review = json.loads(task["note"])
        text = review["draft"] + "\nOpen questions:\n" + "\n".join(f"- {q}" for q in review["open"])
    else:
        found = json.loads(task["note"])
        lines = [f"- {r['item']} {r['answer']}" for r in found["results"]]
        open_questions = [f"{f['item']} ({f['reason']})" for f in found["failed"]]
        text = f"Report on {task['input']['topic']}:\n" + "\n".join(lines)
        return call(
            "handoff",
            to="critic",
            reason="first draft",
            note=json.dumps({"draft": text, "open": open_questions}),
        )
    return call("handoff", to="critic", reason="revised draft", note=json.dumps({"draft": text}))


def review(request: ModelRequest) -> ModelTurn:
    task = json.loads(request.messages[1].content)
    sent = json.loads(task["note"])
    if "Open questions:" not in sent["draft"]:
        return call(
            "handoff",
            to="writer",
            reason="name the questions the research left open",
            note=json.dumps({"draft": sent["draft"], "open": sent.get("open", [])}),
        )
    return say(sent["draft"])


writer = Agent(
    "writer",
    Role("writer"),
    ScriptedModel([draft], name="writer"),
    instructions="Write the report from the findings, one line each, with their sources.",
    budget=Budget(steps=4),
)
critic = Agent(
    "critic",
    Role("critic"),
    ScriptedModel([review], name="critic"),
    instructions="Every finding needs its source, and every open question its line.",
    budget=Budget(steps=4),
)

topology = Topology(
    "research_fanout",
    map_reduce(
        "research",
        researcher,
        critic_loop("report", writer, critic, rounds=2, budget=Budget(steps=8)),
        over="questions",
        copies=2,
        budget=Budget(steps=30, spawns=5),
    ),
)
task = {
    "topic": "serving the model in the EU",
    "questions": [
        "How long does a cold start of the service take?",
        "Which regions serve the EU customers?",
        "What does an hour of GPU time cost?",
    ],
}
