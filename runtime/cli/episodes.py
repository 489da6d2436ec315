"""Commands that run and look back at episodes: run, resume, cancel, fork, replay, diff."""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.agents._context import digest, total
from tether.agents.loop import context_at
from tether.agents.openai_compat import OpenAIModel
from tether.memory._redaction import without_redacted
from tether.memory._steps import parse_step, turn_of_action
from tether.memory.compare import diff_episodes
from tether.memory.episodes import (
    episode_events,
    fork_episode,
    list_episodes,
    load_timeline,
    runnable,
)
from tether.memory.errors import ConfigError, EpisodeNotFound
from tether.memory.events import ActionProposed, EpisodeStarted, ModelResponded, agent_stream_id
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.store import Store
from tether.runtime.cli._render import (
    Progress,
    _count,
    _esc,
    _json,
    _table,
    err,
    event_json,
    out,
    render,
)
from tether.runtime.cli._shared import (
    Address,
    Approver,
    Db,
    Init,
    Json,
    _current_user,
    _db_flag,
    _episode_id,
    _prog,
    handled,
)
from tether.runtime.escalation import Escalations
from tether.runtime.launch import cancel as cancel_episode
from tether.runtime.launch import resume as resume_episode
from tether.runtime.launch import run
from tether.runtime.model_server import MODEL_NAME, ModelServer, Steer
from tether.runtime.reexecute import reexecute
from tether.topologies import demo as demo_fleet
from tether.topologies.loader import Loaded, load_file, load_module, load_source


@handled
def demo(
    db: Db = None,
    address: Address = None,
    init: Init = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Drive the desk with a real small model (SmolLM2-135M on llama-cpp-python, "
            "started on this machine and stopped after; install it with `make live`).",
        ),
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="With --live: use this OpenAI-compatible endpoint instead of starting one.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="With --live and --base-url: the model's name there."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="With --live: the sampling seed.")
    ] = None,
    resume_id: Annotated[
        str | None,
        typer.Option("--resume", help="With --live: continue this live demo episode."),
    ] = None,
) -> None:
    """Run the refund desk until it finishes or waits for a person; summarize the gate."""

    if not live:
        if base_url or model or seed is not None or resume_id:
            raise ConfigError("--base-url, --model, --seed and --resume go with --live")
        loaded = load_module("tether.topologies.demo")
        _init(db, init)
        with Progress("running the refund desk on Ray", db) as progress:
            report = run(loaded, db=db, address=address, on_episode=progress.follow)
        _summarize(report.episode_id, db)
        return
    with _live_model(base_url, model, seed) as (loaded, said):
        err.print(said, markup=False)
        _init(db, init)
        if resume_id is not None:
            episode_id = _episode_id(resume_id, db)
            with Progress("resuming the live refund desk on Ray", db, resuming=True) as progress:
                report = resume_episode(
                    episode_id,
                    topology=loaded.topology,
                    db=db,
                    address=address,
                    on_episode=progress.follow,
                )
        else:
            with Progress("running the refund desk on a real model", db) as progress:
                report = run(loaded, db=db, address=address, on_episode=progress.follow)
    _summarize(report.episode_id, db)


LIVE_RESUME = "tether demo --live --resume"
"""How a live demo episode that waits for a person is finished (its models are rebuilt)."""


@contextlib.contextmanager
def _live_model(
    base_url: str | None, model: str | None, seed: int | None
) -> Iterator[tuple[Any, str]]:
    """The live refund desk on a model server: the one at ``base_url``, or one started
    here (and stopped after)."""

    def desk(url: str, name: str) -> Loaded:
        # A small model, sampled with some temperature, told on each turn whether to call a
        # tool or answer (Steer): what it calls and says is its own.
        real = OpenAIModel(
            name,
            base_url=url,
            temperature=0.7,
            seed=seed,
            max_tokens=96,
            timeout_s=30,
            tool_choice=Steer(seed),
        )
        source = {"kind": "python", "name": "refund_desk", "resume": LIVE_RESUME}
        return Loaded(
            demo_fleet.live(real), source, demo_fleet.task, demo_fleet.context, demo_fleet.subject
        )

    if base_url is not None:
        yield (
            desk(base_url, model or MODEL_NAME),
            f"live model: {model or MODEL_NAME} at {base_url}",
        )
        return
    with ModelServer() as server:
        yield (
            desk(server.base_url, MODEL_NAME),
            (f"live model: {MODEL_NAME} served by llama-cpp-python at {server.base_url}"),
        )


@handled
def run_file(
    file: Annotated[Path, typer.Argument(help="A Python file that defines a Topology.")],
    db: Db = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="The entry agent's input as JSON (default: the file's `task`)."
        ),
    ] = None,
    task_file: Annotated[
        Path | None,
        typer.Option(
            "--task-file",
            help="A JSON file holding the entry agent's input, for one too big for a command line.",
        ),
    ] = None,
    attr: Annotated[
        str | None,
        typer.Option("--attr", help="Name of the Topology in the file (default: `topology`)."),
    ] = None,
    address: Address = None,
    init: Init = False,
) -> None:
    """Run a topology defined in a Python file."""

    if task is not None and task_file is not None:
        raise ConfigError("--task and --task-file: give one of them")
    loaded = load_file(file, attr)
    given = None
    if task is not None:
        try:
            given = json.loads(task)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--task: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(given, dict):
            raise ConfigError('--task: must be a JSON object, e.g. \'{"question": "..."}\'')
    if task_file is not None:
        given = _task_from(task_file)
    _init(db, init)
    with Progress(f"running {loaded.topology.name} on Ray", db) as progress:
        report = run(loaded, given, db=db, address=address, on_episode=progress.follow)
    _summarize(report.episode_id, db)


def _task_from(path: Path) -> dict[str, Any]:
    """The task in a JSON file, or one line naming the file and what is wrong with it."""
    where = f"--task-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start})") from None
    try:
        given = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    if not isinstance(given, dict):
        raise ConfigError(f'{where}: must be a JSON object, e.g. {{"question": "..."}}')
    return given


def _init(db: str | None, init: bool) -> None:
    """With --init, add tether's tables to the database first; the run then finds a store
    there (without it, the run refuses a database of other tables)."""
    if init:
        Store(db, mode="init").close()


@handled
def validate(
    file: Annotated[Path, typer.Argument(help="A Python file that defines a Topology.")],
    attr: Annotated[
        str | None,
        typer.Option("--attr", help="Name of the Topology in the file (default: `topology`)."),
    ] = None,
) -> None:
    """Check a topology without running it: every problem at once, each with its path
    and the fix; exit 1 if there is any."""

    topology = load_file(file, attr).topology
    out.print(
        f"{file}: {topology.name} is valid: {_count(len(topology.agents()), 'agent')} under "
        f"{_count(len(topology.supervisors()), 'supervisor')}; entry {topology.entry}",
        markup=False,
    )


@handled
def resume(
    episode: Annotated[str, typer.Argument(help="The episode id.")],
    db: Db = None,
    address: Address = None,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            help="Take the episode from the runner that holds its lease (recorded and "
            "audited); that runner records nothing more.",
        ),
    ] = False,
    accept_changed: Annotated[
        bool,
        typer.Option(
            "--accept-changed",
            help="Resume under a topology (file or policy) that changed since the episode "
            "started (recorded).",
        ),
    ] = False,
) -> None:
    """Continue an episode: after approvals were decided, or after a crash."""

    episode_id = _episode_id(episode, db)
    with Progress("resuming on Ray", db, resuming=True) as progress:
        report = resume_episode(
            episode_id,
            db=db,
            address=address,
            on_episode=progress.follow,
            take_over=take_over,
            accept_changed=accept_changed,
        )
    _summarize(report.episode_id, db)


@handled
def cancel(
    episode: Annotated[str, typer.Argument(help="The episode id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    db: Db = None,
    approver: Approver = None,
) -> None:
    """End an episode that is running, waiting or stuck: recorded and audited; its runner
    (if any) records nothing more; its pending approvals are denied."""

    who = approver or _current_user()
    done = cancel_episode(_episode_id(episode, db), by=who, reason=reason, db=db)
    out.print(f"cancelled: {done.episode_id} (it was {done.was}) by {who}", markup=False)
    if done.denied:
        n = len(done.denied)
        out.print(
            f"denied {n} pending approval{'s' if n != 1 else ''}: {', '.join(done.denied)}",
            markup=False,
        )
    if done.aborted:
        out.print(f"aborted escalation(s): {', '.join(done.aborted)}", markup=False)


@handled
def fork(
    episode: Annotated[str, typer.Argument(help="The episode to fork.")],
    at: Annotated[int, typer.Option("--at", help="Model turns the fork shares (of all agents).")],
    db: Db = None,
    address: Address = None,
) -> None:
    """Start a new episode sharing the first N steps of another, and continue it live."""

    source = _episode_id(episode, db)
    with Store(db, mode="existing") as store:
        forked = fork_episode(store, source, at, RandomIds().new(), SystemClock().now())
    out.print(f"forked {source} after {at} model turns as {forked}", markup=False)
    with Progress("continuing the fork on Ray", db) as progress:
        report = resume_episode(forked, db=db, address=address, on_episode=progress.follow)
    _summarize(report.episode_id, db)


def _summarize(episode_id: uuid.UUID, db: str | None) -> None:

    with Store(db, mode="existing") as store:
        t = load_timeline(store, episode_id)
        [started] = store.read(episode_id, limit=1)
        source = started.source if isinstance(started, EpisodeStarted) else {}
        escalated = [
            x
            for x in Escalations(store, SystemClock()).items()
            if x.request.episode_id == episode_id and "accept" in x.request.options
        ]
    out.print(f"episode: {t.episode_id}")
    out.print(
        f"{t.topology}: {t.headline()}" + (f" — {t.output}" if t.output else ""), markup=False
    )
    out.print(
        f"actions: {t.count('executed')} allowed, {t.count('denied')} denied, "
        f"{t.count('waiting')} waiting for approval"
        + (f", {t.count('failed')} failed" if t.count("failed") else "")
    )
    for a in t.agents:
        for act in a.actions:
            if act.outcome == "denied":
                out.print(
                    f"  denied  {a.name} #{act.action} {act.tool}: {act.reason}",
                    markup=False,
                )
    for a in t.agents:
        for act in a.actions:
            if act.outcome == "waiting" and act.waits_for == "person":
                args = _json(act.arguments)
                out.print(
                    f"  uncertain {a.name} #{act.action} {act.tool} {args}: a crash cut its "
                    "attempt short; find out whether it happened, then",
                    markup=False,
                )
                out.print(
                    f"    run it again: {_prog()} inbox retry {act.approval_id}{_db_flag(db)}",
                    markup=False,
                )
                out.print(
                    f"    or say:       {_prog()} inbox resolve {act.approval_id} "
                    f"--done|--not-done{_db_flag(db)}",
                    markup=False,
                )
            elif act.outcome == "waiting":
                args = _json(act.arguments)
                out.print(f"  waiting {a.name} #{act.action} {act.tool} {args}", markup=False)
                out.print(
                    f"    approve: {_prog()} inbox approve {act.approval_id}{_db_flag(db)}",
                    markup=False,
                )
                out.print(
                    f"    deny:    {_prog()} inbox deny {act.approval_id}{_db_flag(db)}",
                    markup=False,
                )
    for x in escalated:
        out.print(f"  escalated {x.request.agent}: {x.request.reason}", markup=False)
        for option in x.request.options:
            out.print(
                f"    {option + ':':7}{_prog()} inbox {option} {x.id}{_db_flag(db)}", markup=False
            )
    if t.status == "waiting":
        how = f"{_prog()} resume" if source.get("resume") != LIVE_RESUME else LIVE_RESUME
        out.print(f"then finish it: {how} {t.episode_id}{_db_flag(db)}", markup=False)
    out.print(f"replay it: {_prog()} replay {t.episode_id}{_db_flag(db)}", markup=False)


@handled
def episodes(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Include episodes retention forgot.")
    ] = False,
) -> None:
    """List episodes, oldest first."""
    with Store(db, mode="existing") as store:
        found = list_episodes(store, forgotten=everything)
    if as_json:
        out.print_json(data=[{**asdict(e), "episode_id": str(e.episode_id)} for e in found])
        return
    table = _table("episode", "topology", "started", "status", "detail")
    for e in found:
        table.add_row(str(e.episode_id), e.topology, e.started_at, e.status, _esc(e.detail))
    out.print(table)


@handled
def replay(
    episode: Annotated[str, typer.Argument(help="The episode id.")],
    db: Db = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the events as a JSON array.")
    ] = False,
    reexecute: Annotated[
        bool,
        typer.Option(
            "--reexecute",
            help="Run the topology again on the recorded inputs (no model or tool calls) "
            "and report `identical` or the first divergence; exit 1 if it diverges.",
        ),
    ] = False,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            metavar="AGENT:PLACE",
            help="Exactly what AGENT's model was shown at a turn — AGENT:turnN (its N-th "
            "model turn, from 1) or AGENT:#N (the turn that asked for its action #N) — "
            "rebuilt from the stream and checked against the digest recorded then.",
        ),
    ] = None,
) -> None:
    """Show an episode: agent → action → each gate stage's decision and reason."""
    episode_id = _episode_id(episode, db)
    if context is not None:
        _context(episode_id, context, db, as_json)
        return
    if reexecute:
        _reexecute(episode_id, db)
        return
    with Store(db, mode="existing") as store:
        if as_json:
            events = episode_events(store, episode_id)
        else:
            t = load_timeline(store, episode_id)
    if as_json:
        sys.stdout.write(
            json.dumps(
                [event_json(i, e) for i, e in events], indent=1, default=str, ensure_ascii=False
            )
            + "\n"
        )
        return
    out.print(render(t))


def _context(episode_id: uuid.UUID, spec: str, db: str | None, as_json: bool) -> None:

    agent, _, place = spec.rpartition(":")
    if not agent:
        raise ConfigError(
            f"--context {spec!r}: give AGENT:turnN (its N-th model turn, from 1) or "
            "AGENT:#N (the turn that asked for its action #N), e.g. refunds:turn2"
        )
    step = parse_step(place, f"--context {agent}:")
    if step.kind == "event":
        raise ConfigError(
            f"--context {spec!r}: a context is shown at a model turn; give "
            f"{agent}:turnN or {agent}:#N"
        )
    with Store(db, mode="existing") as store:
        first = store.read(episode_id, limit=1)
        if not first or not isinstance(first[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        if agent not in first[0].agents:
            raise ConfigError(
                f"--context {spec!r}: no agent {agent!r}; the episode has {first[0].agents}"
            )
        stream = agent_stream_id(episode_id, agent)
        numbered = without_redacted(
            store.read_streams([episode_id, stream]), {episode_id: "episode", stream: agent}
        )
        events = [e for _, e in numbered if e.originator_id == stream]
    calls = [e for e in events if isinstance(e, ModelResponded)]
    turn = step.number if step.kind == "turn" else turn_of_action(events, step.number)
    if turn is None:
        actions = sum(1 for e in events if isinstance(e, ActionProposed))
        raise ConfigError(
            f"--context {spec!r}: {agent} has no action {step} (it has #1 to #{actions})"
            if actions
            else f"--context {spec!r}: {agent} proposed no action"
        )
    if turn > len(calls):
        raise ConfigError(
            f"--context {spec!r}: {agent} had {len(calls)} model turns; "
            + (f"choose turn1 to turn{len(calls)}" if calls else "nothing to show")
        )
    messages = context_at(events, turn - 1)
    recorded = (calls[turn - 1].context or {}).get("digest")
    check = (
        "matches the digest recorded at the turn"
        if recorded == digest(messages)
        else "recorded no digest"
        if recorded is None
        else "DOES NOT match the recorded digest"
    )
    position = calls[turn - 1].originator_version
    if as_json:
        out.print_json(
            data={
                "agent": agent,
                "turn": turn,
                "event": position,
                "tokens": total(messages),
                "digest_check": check,
                "messages": [
                    {
                        "role": m.role,
                        "content": m.content,
                        "event": m.event,
                        "tool_calls": [[c.name, c.arguments] for c in m.tool_calls],
                    }
                    for m in messages
                ],
            }
        )
        return
    asked = f" (it asked for {step})" if step.kind == "action" else ""
    out.print(
        f"{agent} turn {turn}, event {position}{asked}: what its model was shown, "
        f"{_count(len(messages), 'message')}, ~{_count(total(messages), 'token')}; {check}",
        markup=False,
    )
    for m in messages:
        calls_text = "".join(f" → {c.name}({_json(c.arguments)})" for c in m.tool_calls)
        out.print(f"[event {m.event:>3}] {m.role:<9} {m.content}{calls_text}", markup=False)


def _reexecute(episode_id: uuid.UUID, db: str | None) -> None:

    with Store(db, mode="existing") as store:
        first = store.read(episode_id, limit=1)
        if not first or not isinstance(first[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode_id))
        topology = load_source(runnable(first[0]).source).topology
        result = reexecute(store, episode_id, topology)
    fed = result.fed_back
    inputs = (
        f"{_count(fed['model_turns'], 'model turn')}, {_count(fed['tool_results'], 'tool result')}"
        f" and {_count(fed['approval_decisions'], 'approval decision')} fed back; no model or tool "
        "was called"
    )
    if result.identical:
        out.print(
            f"identical: {_count(result.events_compared, 'event')} re-executed ({inputs})",
            markup=False,
        )
        return
    out.print(f"diverged at {result.divergence} ({inputs})", markup=False)
    raise typer.Exit(1)


@handled
def diff(
    a: Annotated[str, typer.Argument(help="An episode id.")],
    b: Annotated[str, typer.Argument(help="Another episode id.")],
    db: Db = None,
) -> None:
    """Show where two episodes part ways, agent by agent (ids and times aside)."""

    first, second = _episode_id(a, db), _episode_id(b, db)
    with Store(db, mode="existing") as store:
        found = diff_episodes(store, first, second)
    for d in found:
        if d.divergence is None:
            out.print(f"{d.agent}: the same ({_count(d.same, 'event')})", markup=False)
            continue
        v = d.divergence
        out.print(
            f"{d.agent}: the same for {_count(d.same, 'event')}, then part ways at {v.place} "
            f"({v.event}.{v.field}): a {v.recorded!r}, b {v.new!r}",
            markup=False,
        )
