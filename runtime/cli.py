"""The ``tether`` command: run fleets, decide approvals, replay episodes.

Every command takes ``--db URL`` (or ``TETHER_DB``). Bad input gets one line naming the
problem and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import logging
import os
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tether.agents.context import digest, total
from tether.agents.loop import context_at
from tether.agents.openai_compat import OpenAIModel
from tether.memory.audit import AuditKey, key_id, load_public_key, public_pem, resolve_key_path
from tether.memory.compare import diff_episodes
from tether.memory.coverage import verify_trail
from tether.memory.episodes import (
    Timeline,
    episode_events,
    fork_episode,
    list_episodes,
    load_timeline,
    runnable,
)
from tether.memory.errors import (
    ApprovalNotFound,
    AuditKeyError,
    ConfigError,
    EpisodeNotFound,
    EvidenceError,
    NotFound,
    TetherError,
)
from tether.memory.events import (
    ActionProposed,
    ApprovalRequested,
    EpisodeStarted,
    EscalationRequested,
    Event,
    ModelResponded,
    agent_stream_id,
)
from tether.memory.forgetting import erase_subject, redact_step, retain_episodes
from tether.memory.org import OrgMemory, Retention
from tether.memory.redaction import without_redacted
from tether.memory.schema import upgrade as upgrade_schema
from tether.memory.sources import RandomIds, SystemClock
from tether.memory.steps import parse_step, turn_of_action
from tether.memory.store import Store
from tether.runtime.budget import dollars
from tether.runtime.escalation import Escalations
from tether.runtime.evidence import export_bundle, verify_bundle
from tether.runtime.inbox import Inbox
from tether.runtime.launch import cancel as cancel_episode
from tether.runtime.launch import resume as resume_episode
from tether.runtime.launch import run
from tether.runtime.model_server import MODEL_NAME, ModelServer, Steer
from tether.runtime.prefixes import resolve
from tether.runtime.reexecute import reexecute
from tether.runtime.status import fleet_status
from tether.topologies import demo as demo_fleet
from tether.topologies.loader import Loaded, load_file, load_module, load_source
from tether.topologies.policy import Policy

app = typer.Typer(
    help="tether: run a fleet of AI agents safely, and replay what it did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
inbox_app = typer.Typer(
    help="The approvals inbox: actions waiting for a person.", no_args_is_help=True
)
app.add_typer(inbox_app, name="inbox")
policy_app = typer.Typer(help="Policies an operator writes in TOML or YAML.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
audit_app = typer.Typer(
    help="The signed audit trail of every decision, and evidence bundles for auditors.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@app.callback()
def _options(
    audit_key: Annotated[
        Path | None,
        typer.Option(
            "--audit-key",
            envvar="TETHER_AUDIT_KEY",
            show_envvar=True,
            help="The Ed25519 key file that signs the audit trail (default "
            ".tether/audit.key; created if missing by the commands that record, never by "
            "`audit verify`). Keep it apart from the database.",
        ),
    ] = None,
) -> None:
    if audit_key is not None:
        os.environ["TETHER_AUDIT_KEY"] = str(audit_key.expanduser().resolve())


# Off a terminal (a pipe, a file, CI logs), lines are not cut to 80 columns: a post-mortem
# must not lose the end of a reason.
_TTY = sys.stdout.isatty()
out = Console(highlight=False, width=None if _TTY else 10_000, soft_wrap=not _TTY)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TETHER_DB",
        show_envvar=True,
        help="Store URL (SQLAlchemy form): sqlite:///path.db or postgresql://user@host/db.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Init = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Add tether's tables to a database that holds other tables (a new file or an "
        "empty database needs no --init).",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address", help="Join a running Ray cluster at this address instead of starting one."
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def handled(fn: F) -> F:
    """Turn tether's errors into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TetherError as e:
            lines = str(e).splitlines() or [type(e).__name__]
            err.print(f"[bold red]error:[/] {_esc(lines[0])}", markup=True)
            for line in lines[1:]:
                err.print(line, markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _prog() -> str:
    """How to call tether again: ``tether`` if that is on PATH, else the path used now."""
    used = sys.argv[0] if sys.argv else ""
    if Path(used).name != "tether":
        return "tether"
    found = shutil.which("tether")
    if found and Path(found).resolve() == Path(used).resolve():
        return "tether"
    return used


def _db_flag(db: str | None) -> str:
    """The ``--db`` part of a command we print for the user to run next."""
    if db is None or db == os.environ.get("TETHER_DB"):
        return ""
    return f" --db {shlex.quote(db)}"


def _ids_of(db: str | None, *types: type[Event]) -> Callable[[], list[uuid.UUID]]:
    """The ids of the streams that start with one of ``types``, read when asked."""

    def known() -> list[uuid.UUID]:
        with Store(db, mode="existing") as store:
            return [e.originator_id for _, e in store.of_type(*types)]

    return known


def _episode_id(given: str, db: str | None) -> uuid.UUID:
    """The episode a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "episode", _ids_of(db, EpisodeStarted), EpisodeNotFound)


def _approval_id(given: str, db: str | None) -> uuid.UUID:
    """The approval request a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "approval request", _ids_of(db, ApprovalRequested), ApprovalNotFound)


def _escalation_id(given: str, db: str | None) -> uuid.UUID:
    """The escalation a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "escalation", _ids_of(db, EscalationRequested), ApprovalNotFound)


# --- running ------------------------------------------------------------------------


@app.command()
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


@app.command("run")
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


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
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


class Progress:
    """A live line on stderr while a fleet runs: the agent at work, actions by outcome,
    model turns and time, read from the store twice a second by a background thread (the
    store is the truth: the line is the same whichever host the agents run on).

    It also tells the driver of each high-tier request the fleet opens: the inbox's
    ``notify`` hook fires inside the Ray host, whose log the driver never shows, so the
    driver calls it again, on its own ``tether.inbox`` logger, which is shown above the
    line. With ``resuming``, requests already waiting were told of before.
    """

    def __init__(self, label: str, db: str | None, *, resuming: bool = False) -> None:
        self.label, self.db = label, db
        self.episode: uuid.UUID | None = None
        self.done = threading.Event()
        self.started = time.monotonic()
        self.resuming = resuming
        self.told: set[str] = set()
        """Approval requests the driver has announced (or found waiting on resume)."""
        self.telling = threading.Lock()

    def follow(self, episode_id: uuid.UUID) -> None:
        if self.resuming:
            with Store(self.db, mode="existing") as store:
                self.told |= set(_waiting_approvals(load_timeline(store, episode_id)))
        self.episode = episode_id

    def line(self, store: Store) -> str:
        if self.episode is None:
            return self.line_without_store()
        t = load_timeline(store, self.episode)
        self.announce(store, t)
        elapsed = f"{time.monotonic() - self.started:.0f} s"
        busy = [a for a in t.agents if a.status == "working"]
        who = f"{busy[-1].name} working" if busy else t.status
        turns = sum(a.turns for a in t.agents)
        return (
            f"{self.label}: {t.topology} · {who} · {t.count('executed')} allowed, "
            f"{t.count('denied')} denied, {t.count('waiting')} waiting · "
            f"{_count(turns, 'model turn')} · {elapsed}"
        )

    def announce(self, store: Store, t: Timeline) -> None:
        """Call the inbox's ``notify`` hook here, in the driver, for each request that now
        waits and was not told of yet (``Inbox.opened``: high tier only)."""

        with self.telling:
            inbox = Inbox(store, SystemClock())
            for approval in _waiting_approvals(t):
                if approval in self.told:
                    continue
                self.told.add(approval)
                item = inbox.get(approval)
                if item.status == "pending":
                    inbox.opened(item.request)

    def _watch(self, status: Any) -> None:
        # The store is opened once the run has recorded its episode (so the run opened
        # it first, and created whatever it had to).
        while self.episode is None:
            if self.done.wait(0.5):
                return
            status.update(escape(self.line_without_store()))
        try:
            with Store(self.db, mode="existing") as store:
                while not self.done.wait(0.5):
                    status.update(escape(self.line(store)))
        except Exception:
            pass  # the display is a courtesy: never let it disturb the run

    def line_without_store(self) -> str:
        return f"{self.label}… {time.monotonic() - self.started:.0f} s"

    def __enter__(self) -> Progress:
        self.status = err.status(escape(f"{self.label}…"))
        self.status.__enter__()
        self.shown = _ShownOnStderr()
        logging.getLogger("tether.inbox").addHandler(self.shown)
        self.thread = threading.Thread(target=self._watch, args=(self.status,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        try:
            if self.episode is not None:  # what the last half second opened
                with Store(self.db, mode="existing") as store:
                    self.announce(store, load_timeline(store, self.episode))
        except Exception:
            pass  # as above: the run's own outcome is what the command reports
        finally:
            logging.getLogger("tether.inbox").removeHandler(self.shown)
            self.status.__exit__(None, None, None)


class _ShownOnStderr(logging.Handler):
    """Shows the driver's ``tether.inbox`` records above the live line."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(self.format(record), markup=False)


def _waiting_approvals(t: Timeline) -> list[str]:
    """The approval requests the episode's actions wait for."""
    return [
        act.approval_id
        for a in t.agents
        for act in a.actions
        if act.outcome == "waiting" and act.approval_id is not None and act.waits_for == "approval"
    ]


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


def _table(*columns: str) -> Table:
    """A table whose id columns are never cut: they are what people copy."""
    table = Table()
    for c in columns:
        table.add_column(c, no_wrap=c in ("id", "episode"), overflow="fold")
    return table


# --- looking back ---------------------------------------------------------------------


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
@handled
def facts(
    subject: Annotated[
        str | None, typer.Argument(help="Whom the facts are about, e.g. customer:ada.")
    ] = None,
    db: Db = None,
    search: Annotated[
        str | None, typer.Option("--search", help="Facts whose statement or key has this word.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="What tether believed then (ISO time, UTC if no zone)."),
    ] = None,
    valid_at: Annotated[
        str | None, typer.Option("--valid-at", help="What was true then (ISO time).")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Every fact ever recorded, superseded ones too.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild the facts read model from the events.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Org memory: facts about a subject, now or at a time, with where they came from."""

    when = {
        name: _when(name, value) for name, value in (("--as-of", as_of), ("--valid-at", valid_at))
    }
    with Store(db, mode="existing") as store:
        org = OrgMemory(store)
        if rebuild:
            folded = _count(org.rebuild(), "event")
            out.print(f"rebuilt the facts read model from {folded}", markup=False)
            if subject is None and search is None:
                return
        if search is not None:
            found = org.search(search, as_of=when["--as-of"], history=history)
        elif subject is not None:
            found = org.about(
                subject, as_of=when["--as-of"], valid_at=when["--valid-at"], history=history
            )
            if not found and not org.about(subject, history=True):
                raise NotFound(
                    f"no facts about {subject!r}; `tether facts --search WORD` finds subjects"
                )
        else:
            raise ConfigError("give a SUBJECT (e.g. customer:ada), --search WORD or --rebuild")
    if as_json:
        out.print_json(
            data=[
                {
                    **asdict(f),
                    **{
                        k: v.isoformat() if v else None
                        for k, v in (
                            ("valid_from", f.valid_from),
                            ("valid_to", f.valid_to),
                            ("recorded_at", f.recorded_at),
                            ("superseded_at", f.superseded_at),
                        )
                    },
                }
                for f in found
            ]
        )
        return
    table = _table("subject", "key", "statement", "valid", "recorded", "source")
    for f in found:
        valid = f"{f.valid_from:%Y-%m-%d %H:%M} → " + (
            f"{f.valid_to:%Y-%m-%d %H:%M}" if f.valid_to else "now"
        )
        recorded = f"{f.recorded_at:%Y-%m-%d %H:%M}" + (
            f" (superseded {f.superseded_at:%Y-%m-%d %H:%M})" if f.superseded_at else ""
        )
        # Recorded text is shown as written: an erased statement reads "[erased]", not markup.
        cells = (f.subject, f.key, f.statement, valid, recorded, f"{f.agent} · {f.source_event}")
        table.add_row(*map(_esc, cells))
    out.print(table)
    if not found:
        out.print("no facts match", markup=False)


@app.command()
@handled
def forget(
    subject: Annotated[str, typer.Argument(help="The data subject, e.g. customer:ada.")],
    db: Db = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (the request, the legal ground); recorded.")
    ] = "erasure requested",
    approver: Approver = None,
) -> None:
    """Erase a data subject: destroy their key (crypto-shredding), rebuild what was derived
    from their data, and record an erasure receipt."""

    who = approver or _current_user()
    with Store(db, mode="existing") as store:
        done = erase_subject(store, subject, requested_by=who, reason=reason, clock=SystemClock())
    out.print(
        f"erased {subject}: key destroyed; {_count(done.sealed_events, 'event')} now read "
        f"their personal fields as erased; {_count(done.facts, 'fact')} erased",
        markup=False,
    )
    for item in done.rebuilt:
        out.print(f"  rebuilt: {item}", markup=False)
    out.print(
        f"receipt: {done.receipt.originator_id}/{done.receipt.originator_version} "
        f"(requested by {who}: {reason})",
        markup=False,
    )


@app.command()
@handled
def redact(
    episode: Annotated[str, typer.Argument(help="The episode id.")],
    agent: Annotated[str, typer.Argument(help="The agent (or `episode`) whose event it is.")],
    step: Annotated[
        str,
        typer.Argument(
            metavar="PLACE",
            help="Where, counted from 1 in that agent's stream: '#N' or actionN (every "
            "event of its action #N that has the field), turnN (its N-th model turn) or "
            "eventN (the N-th event, as --reexecute reports it).",
        ),
    ],
    field: Annotated[str, typer.Argument(help="The field to redact, e.g. arguments.")],
    db: Db = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "redacted",
    approver: Approver = None,
) -> None:
    """Redact one field of recorded events; each redaction is itself recorded."""

    place = parse_step(step, "PLACE")
    who = approver or _current_user()
    episode_id = _episode_id(episode, db)
    with Store(db, mode="existing") as store:
        done = redact_step(
            store,
            episode_id,
            agent,
            place,
            field,
            reason=reason,
            by=who,
            clock=SystemClock(),
        )
    events = "" if place.kind == "event" else ", ".join(f"event {d.position}" for d in done) + "; "
    out.print(
        f"redacted {agent} {place} {field} ({events}{reason}; by {who})",
        markup=False,
    )


@app.command()
@handled
def retain(
    db: Db = None,
    ttl_days: Annotated[
        int | None, typer.Option("--ttl-days", min=1, help="Forget facts older than this.")
    ] = None,
    max_per_subject: Annotated[
        int | None,
        typer.Option("--max-per-subject", min=1, help="Keep only the newest N per subject."),
    ] = None,
    unused_days: Annotated[
        int | None,
        typer.Option("--unused-days", min=1, help="Forget facts nobody recalled for this long."),
    ] = None,
    episode_ttl_days: Annotated[
        int | None,
        typer.Option("--episode-ttl-days", min=1, help="Forget finished episodes this old."),
    ] = None,
    max_episodes: Annotated[
        int | None,
        typer.Option("--max-episodes", min=1, help="Keep only the newest N finished episodes."),
    ] = None,
) -> None:
    """Apply retention to org memory (facts) and episodic memory (finished episodes); each
    thing forgotten is a recorded event with its rule."""
    from datetime import timedelta

    rules = (ttl_days, max_per_subject, unused_days, episode_ttl_days, max_episodes)
    if all(rule is None for rule in rules):
        raise ConfigError(
            "give at least one rule: --ttl-days, --max-per-subject, --unused-days, "
            "--episode-ttl-days or --max-episodes"
        )
    policy = Retention(
        ttl=timedelta(days=ttl_days) if ttl_days else None,
        max_per_subject=max_per_subject,
        unused_for=timedelta(days=unused_days) if unused_days else None,
    )
    now = SystemClock().now()
    with Store(db, mode="existing") as store:
        facts_gone = OrgMemory(store).retain(policy, now)
        episodes_gone = retain_episodes(
            store,
            ttl=timedelta(days=episode_ttl_days) if episode_ttl_days else None,
            keep=max_episodes,
            now=now,
        )
    for e in facts_gone:
        out.print(
            f"forgot {_count(len(e.facts), 'fact')} about {e.subject}: {e.why} ({e.rule})",
            markup=False,
        )
    for g in episodes_gone:
        out.print(f"forgot episode {g.originator_id}: {g.why} ({g.rule})", markup=False)
    if not facts_gone and not episodes_gone:
        out.print("nothing to forget", markup=False)


def _when(option: str, value: str | None) -> datetime | None:

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r}: not an ISO time; e.g. 2026-11-21 or 2026-11-21T09:30:00+00:00"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def event_json(notification_id: int, e: Event) -> dict[str, Any]:
    """An event as a JSON object: its position, type, and fields."""
    fields = {
        k: v for k, v in vars(e).items() if k not in ("originator_id", "originator_version", "at")
    }
    return {
        "id": notification_id,
        "stream": str(e.originator_id),
        "version": e.originator_version,
        "type": type(e).__name__,
        "at": e.at.isoformat(),
        **fields,
    }


def render(t: Timeline) -> Tree:
    """The episode as a rich tree."""
    colors = {"executed": "green", "denied": "red", "failed": "red", "waiting": "yellow"}
    root = Tree(
        f"[bold]episode {t.episode_id}[/] · {t.topology} · "
        f"[{'green' if t.headline() == 'completed' else 'yellow'}]{_esc(t.headline())}[/] · "
        f"started {t.started_at}"
    )
    for a in t.agents:
        by = ", ".join(a.assigned_by) or "nobody"
        branch = root.add(
            f"[bold cyan]{a.name}[/] (task from {by}) · {_count(a.turns, 'model turn')} · "
            f"{_count(a.steps_used, 'step')} used · {a.status}"
            + (f": {_esc(a.detail)}" if a.detail else "")
        )
        for act in a.actions:
            color = colors.get(act.outcome, "white")
            args = _esc(_json(act.arguments))
            node = branch.add(
                f"#{act.action} [bold]{act.tool}[/] {args} → [{color}]{act.outcome}[/]"
            )
            for s in act.stages:
                extra = _stage_extra(s.stage, s.detail)
                node.add(
                    f"{s.stage:<12} [{_stage_color(s.decision)}]{s.decision:<9}[/] "
                    f"{_esc(s.reason)}{extra}"
                )
    if t.effects:
        effects = root.add("[bold]effects[/] (the ledger: each key once)")
        for e in t.effects:
            effects.add(f"{e.key} · {e.tool} · {_esc(_json(e.result))}")
    return root


def _stage_extra(stage: str, detail: dict[str, Any]) -> str:
    if stage == "budget" and "left" in detail:
        left = ", ".join(f"{k} {'∞' if v is None else v}" for k, v in detail["left"].items())
        return f" [dim](left: {left})[/]"
    if stage == "governance":
        return f" [dim](tier {detail.get('tier')}; rules {', '.join(detail.get('rules', []))})[/]"
    if stage == "execution" and detail.get("effect_key"):
        return f" [dim](effect {detail['effect_key']})[/]"
    origins = detail.get("provenance")
    if stage == "boundaries" and isinstance(origins, dict) and origins:
        traced = ", ".join(
            f"{name} ← {o.get('origin')}" + (f" {o['source']}" if o.get("source") else "")
            for name, o in origins.items()
            if isinstance(o, dict)
        )
        return f" [dim](origins: {_esc(traced)})[/]"
    return ""


def _stage_color(decision: str) -> str:
    if decision in ("deny", "denied", "fail", "error"):
        return "red"
    if decision in ("waiting", "approval"):
        return "yellow"
    return "green"


def _esc(text: str) -> str:
    return escape(text)


def _count(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 agent``, ``2 agents``: a count and its noun, agreeing."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def _json(value: Any) -> str:
    """A value as JSON for people to read: its text in its own characters, not escapes."""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


# --- the inbox ------------------------------------------------------------------------


@inbox_app.command("list")
@handled
def inbox_list(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
) -> None:
    """Show requests waiting for a person."""

    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        items = inbox.items(None if everything else "pending")
        escalated = Escalations(store, SystemClock()).items()
    # What interrupts a person comes first: high tier, then medium, oldest first.
    items.sort(key=lambda i: (i.status != "pending", i.request.tier != "high"))
    if as_json:
        out.print_json(data=[i.as_dict() for i in items])
        return
    _inbox_table(items)
    if escalated:
        out.print(
            f"{_count(len(escalated), 'escalation')} "
            f"{'waits' if len(escalated) == 1 else 'wait'} for a person: "
            f"{_prog()} inbox escalations{_db_flag(db)}",
            markup=False,
        )
    elif not items:
        out.print("nothing waits for a person")


@inbox_app.command("escalations")
@handled
def inbox_escalations(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[bool, typer.Option("--all", help="Include decided ones.")] = False,
) -> None:
    """Episodes whose supervisor gave up and asks a person: retry, accept or abort."""
    with Store(db, mode="existing") as store:
        found = Escalations(store, SystemClock()).items(pending_only=not everything)
    if as_json:
        out.print_json(data=[x.as_dict() for x in found])
        return
    if not found:
        out.print("no escalation waits for a person")
        return
    table = _table("id", "status", "episode", "agent", "why", "partial results", "answers")
    for x in found:
        r = x.request
        partial = _json(r.partial)
        answers = (
            "retry | resolve --done | resolve --not-done"
            if "done" in r.options
            else (" | ".join(r.options))
        )
        cells = (str(x.id), x.status, str(r.episode_id), r.agent, r.reason, partial, answers)
        table.add_row(*map(_esc, cells))
    out.print(table)
    out.print(
        f"decide: {_prog()} inbox retry|accept|abort ID --as NAME --reason WHY{_db_flag(db)}",
        markup=False,
    )
    if any("done" in x.request.options for x in found):
        out.print(
            f"a side effect a crash left uncertain: {_prog()} inbox retry ID, or "
            f"{_prog()} inbox resolve ID --done|--not-done --as NAME --reason WHY{_db_flag(db)}",
            markup=False,
        )


def _escalation(
    escalation: str,
    option: str,
    db: str | None,
    approver: str | None,
    reason: str,
    steps: int = 0,
    tokens: int = 0,
    cost: str = "0",
    seconds: float = 0.0,
) -> None:
    who = approver or _current_user()
    try:
        dollars = Decimal(cost)
    except ArithmeticError:
        raise ConfigError(f"--cost: {cost!r} is not an amount of dollars; give e.g. 2.50") from None
    escalation_id = _escalation_id(escalation, db)
    with Store(db, mode="existing") as store:
        item = Escalations(store, SystemClock()).decide(
            escalation_id,
            option,
            who,
            reason,
            steps=steps,
            tokens=tokens,
            cost=dollars,
            seconds=seconds,
        )
    out.print(f"{item.status}: {item.id} ({item.request.agent}) as {who}", markup=False)
    out.print(
        f"carry it out: {_prog()} resume {item.request.episode_id}{_db_flag(db)}", markup=False
    )


Escalation = Annotated[str, typer.Argument(help="The escalation id.")]


@inbox_app.command("retry")
@handled
def inbox_retry(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    steps: Annotated[int, typer.Option("--steps", help="Steps to add to its budget.")] = 0,
    tokens: Annotated[int, typer.Option("--tokens", help="Model tokens to add.")] = 0,
    cost: Annotated[str, typer.Option("--cost", help="Dollars of model spend to add.")] = "0",
    seconds: Annotated[
        float, typer.Option("--seconds", help="Seconds of time to live to add.")
    ] = 0.0,
) -> None:
    """Answer an escalation: restart the agent, with more budget if given."""
    _escalation(escalation, "retry", db, approver, reason, steps, tokens, cost, seconds)


@inbox_app.command("accept")
@handled
def inbox_accept(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation: the episode completes with the partial results."""
    _escalation(escalation, "accept", db, approver, reason)


@inbox_app.command("abort")
@handled
def inbox_abort(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation: the episode fails, with your reason."""
    _escalation(escalation, "abort", db, approver, reason)


@inbox_app.command("resolve")
@handled
def inbox_resolve(
    escalation: Escalation,
    done: Annotated[
        bool | None,
        typer.Option(
            "--done/--not-done",
            help="What you found: the side effect happened (its action is recorded as done, "
            "not run again), or it did not (the action fails; the agent is told).",
        ),
    ] = None,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation about a side effect a crash left uncertain: say whether it
    happened. (To run it again instead: `tether inbox retry ID`.)"""
    if done is None:
        raise ConfigError("say what you found: --done (it happened) or --not-done (it did not)")
    _escalation(escalation, "done" if done else "not-done", db, approver, reason)


def _inbox_table(items: list[Any]) -> None:
    table = _table("id", "status", "tier", "agent", "tool", "arguments", "why", "deadline")
    for i in items:
        r = i.request
        cells = (
            str(i.id),
            i.status,
            r.tier + (" (now)" if r.tier == "high" and i.status == "pending" else ""),
            r.agent,
            r.tool,
            _json(r.arguments),
            r.reason,
            r.deadline.isoformat(timespec="seconds") if r.deadline else "none",
        )
        table.add_row(*map(_esc, cells))
    if items:
        out.print(table)


@inbox_app.command("show")
@handled
def inbox_show(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    as_json: Json = False,
) -> None:
    """Show one request: what, who asked, why, the rules, its deadline and outcome."""

    approval_id = _approval_id(approval, db)
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        item = inbox.get(approval_id)
    data = item.as_dict()
    if as_json:
        out.print_json(data=data)
        return
    for key, value in data.items():
        shown = _json(value) if isinstance(value, dict | list) else value
        out.print(f"{key + ':':16} {shown}", markup=False)


@inbox_app.command("digest")
@handled
def inbox_digest(
    db: Db = None,
    as_json: Json = False,
    approve: Annotated[
        str | None,
        typer.Option("--approve", metavar="DIGEST", help="Approve the digest with this id."),
    ] = None,
    deny: Annotated[
        str | None,
        typer.Option("--deny", metavar="DIGEST", help="Deny the digest with this id."),
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option("--except", help="A request to leave pending; repeat for more."),
    ] = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """The medium-tier batch: show it, then approve or deny it (all, or all --except some)
    in one command, naming the digest id you reviewed."""

    if approve and deny:
        raise ConfigError("--approve and --deny: give one of them")
    left_pending = [str(_approval_id(i, db)) for i in skip or ()]
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        if approve or deny:
            who = approver or _current_user()
            decided = inbox.decide_digest(
                str(approve or deny), bool(approve), who, reason, skip=left_pending
            )
            for item in decided:
                out.print(f"{item.status}: {item.id} ({item.request.tool} by {item.request.agent})")
            left = len(skip or ())
            out.print(
                f"{len(decided)} {'approved' if approve else 'denied'} as {who}"
                + (f"; {left} left pending" if left else "")
                + f". continue each episode with: {_prog()} resume EPISODE{_db_flag(db)}",
                markup=False,
            )
            return
        digest = inbox.digest()
    if as_json:
        out.print_json(data={"digest": digest.id, "items": [i.as_dict() for i in digest.items]})
        return
    if not digest.items:
        out.print("no medium-tier request waits")
        return
    _inbox_table(list(digest.items))
    out.print(
        f"digest {digest.id}: {_count(len(digest.items), 'request')}. decide them all: "
        f"{_prog()} inbox digest --approve {digest.id} [--except ID ...] --reason WHY"
        f"{_db_flag(db)}",
        markup=False,
    )


Approver = Annotated[
    str | None, typer.Option("--as", help="Who decides (recorded); default: the current user.")
]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded).")]


@inbox_app.command("approve")
@handled
def inbox_approve(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Approve a request; `tether resume EPISODE` then carries the action out."""
    _decide(approval, db, approver, reason, grant=True, as_json=as_json)


@inbox_app.command("deny")
@handled
def inbox_deny(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Deny a request; the agent is told, and `tether resume EPISODE` lets it go on."""
    _decide(approval, db, approver, reason, grant=False, as_json=as_json)


def _decide(
    approval: str,
    db: str | None,
    approver: str | None,
    reason: str,
    grant: bool,
    as_json: bool = False,
) -> None:

    who = approver or _current_user()
    approval_id = _approval_id(approval, db)
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        item = (inbox.approve if grant else inbox.deny)(approval_id, who, reason)
    if as_json:
        out.print_json(data=item.as_dict())
        return
    out.print(
        f"{item.status}: {item.id} ({item.request.tool} by {item.request.agent}) as {who}",
        markup=False,
    )
    out.print(f"continue: {_prog()} resume {item.request.episode_id}{_db_flag(db)}", markup=False)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


# --- status ---------------------------------------------------------------------------


@app.command()
@handled
def status(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Include finished and failed episodes.")
    ] = False,
    watch: Annotated[
        float | None,
        typer.Option("--watch", metavar="SECONDS", help="Redraw every SECONDS until Ctrl-C."),
    ] = None,
) -> None:
    """The fleet's tree: each episode's supervisor and agents, their state, the budget
    used and left, and the approvals they wait for."""
    from rich.live import Live

    if watch is not None and watch <= 0:
        raise ConfigError(f"--watch {watch}: give a number of seconds above 0")
    with Store(db, mode="existing") as store:
        if as_json:
            out.print_json(data=[e.as_dict() for e in fleet_status(store, finished=everything)])
            return
        if watch is None:
            shown = fleet_status(store, finished=everything)
            out.print(_status_tree(shown) if shown else _nothing_running(store, db))
            return
        topologies: dict[str, Any] = {}  # each topology file is loaded once, not per redraw
        if not _TTY:
            # Off a terminal (a pipe, a log file) there is nothing to redraw: each change
            # is printed as plain lines, under the time it was seen.
            plain = Console(width=10_000, no_color=True, highlight=False)
            last = None
            try:
                while True:
                    with plain.capture() as drawn:
                        shown = fleet_status(store, finished=everything, topologies=topologies)
                        plain.print(_status_tree(shown))
                    text = drawn.get()
                    if text != last:
                        now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
                        out.print(f"status at {now}:\n{text}", end="", markup=False)
                        out.file.flush()
                        last = text
                    time.sleep(watch)
            except KeyboardInterrupt:
                return
        with Live(console=out, auto_refresh=False) as live:
            try:
                while True:
                    shown = fleet_status(store, finished=everything, topologies=topologies)
                    live.update(_status_tree(shown))
                    live.refresh()
                    time.sleep(watch)
            except KeyboardInterrupt:
                pass


def _nothing_running(store: Store, db: str | None, recent: int = 5) -> str:
    """What ``status`` says when nothing runs or waits: the latest episodes, and how to
    see more."""
    found = list_episodes(store)
    if not found:
        return (
            "no episode is running or waiting, and none was run yet: "
            f"{_prog()} run FILE{_db_flag(db)} starts one"
        )
    lines = [f"no episode is running or waiting; the latest {min(recent, len(found))}:"]
    for e in found[-recent:]:
        detail = f": {e.detail}" if e.detail else ""
        lines.append(f"  {e.episode_id} · {e.topology} · {e.status}{detail} · {e.started_at}")
    lines.append(
        f"all of them: {_prog()} episodes{_db_flag(db)}; their trees: "
        f"{_prog()} status --all{_db_flag(db)}"
    )
    return _esc("\n".join(lines))


def _usage(u: Any, shown: Callable[[Any], str] = str) -> str:
    held = f", {shown(u.reserved)} held by open actions" if u.reserved else ""
    if u.limit is None:
        return f"{shown(u.used)} used{held}"
    return f"{shown(u.used)} used{held}, {shown(u.left)} left of {shown(u.limit)}"


def _budgets(s: Any) -> str:
    """Steps and tokens; cost and time to live where they are limited or used."""

    parts = [f"steps {_usage(s.steps)}", f"tokens {_usage(s.tokens)}"]
    if s.cost.used or s.cost.limit is not None:
        parts.append(f"cost {_usage(s.cost, dollars)}")
    spawns = getattr(s, "spawns", None)
    if spawns is not None and spawns.limit is not None:
        parts.append(f"agents started {_usage(spawns)}")
    if s.ttl_left_s is not None:
        left = s.ttl_left_s
        parts.append(f"ttl {left:.0f} s left" if left > 0 else f"ttl passed {-left:.0f} s ago")
    return "; ".join(parts)


def _status_tree(episodes: list[Any]) -> Any:
    from rich.console import Group

    if not episodes:
        return "no episode is running or waiting"
    trees = []
    for e in episodes:
        tree = Tree(f"[bold]{e.episode_id}[/] · {_esc(e.topology)} · {e.status}")
        unknown = "" if e.limits_known else " [dim](limits unknown: topology not loadable)[/]"
        root = tree.add(f"{_esc(e.supervisor)}: {_budgets(e)}{unknown}")
        nodes = {e.supervisor: root}
        for s in e.supervisors[1:]:  # nested supervisors, each under its parent
            nodes[s.name] = nodes.get(s.parent or "", root).add(
                f"{_esc(s.name)} (supervisor): {_budgets(s)}"
            )
        for a in e.agents:
            waits = f"; waits for {', '.join(a.waiting)}" if a.waiting else ""
            waits += f"; restarts: {a.restarts}" if a.restarts else ""
            detail = f": {_esc(a.detail)}" if a.detail and not a.waiting else ""
            nodes.get(a.supervisor, root).add(
                f"{_esc(a.name)} · {a.state}{detail} · {_budgets(a)}{waits}"
            )
        trees.append(tree)
    return Group(*trees)


# --- policies -------------------------------------------------------------------------


@policy_app.command("check")
@handled
def policy_check(
    file: Annotated[Path, typer.Argument(help="A policy file (.toml, .yaml or .yml).")],
) -> None:
    """Validate a policy file: every problem at once, each with its path; exit 1 if any."""

    policy = Policy.load(file)
    effects = sorted({r.effect for r in policy.rules})
    out.print(
        f"{file}: {_count(len(policy.rules), 'rule')} ({', '.join(effects) or 'none'}), valid",
        markup=False,
    )


# --- the audit trail --------------------------------------------------------------------

PublicKeys = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        help="A public key (PEM) to check signatures with; repeat for rotated keys. "
        "Default: the public half of the signing key file.",
    ),
]


AuditKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--audit-key",
        help="The Ed25519 key file that signs the audit trail (as `tether --audit-key`, "
        "which this overrides).",
    ),
]


def _signing_key_file(audit_key: Path | None, *, public_too: bool = False) -> Path:
    """The signing key file an audit command uses; ``AuditKeyError`` saying where it looked
    and how to name one if it is not there (these commands never make one)."""

    path = resolve_key_path(audit_key)
    if path.exists():
        return path
    if audit_key is not None:
        whence = "given with --audit-key"
    elif os.environ.get("TETHER_AUDIT_KEY"):
        whence = "named by TETHER_AUDIT_KEY or tether --audit-key"
    else:
        whence = "the default, under the current directory"
    how = "pass the key that signed the trail with --audit-key PATH"
    if public_too:
        how += " (or its public half with --key PUB.pem, from `tether audit key` where it is)"
    raise AuditKeyError(str(path), f"no such file ({whence}); {how}")


def _public_keys(paths: list[Path] | None, audit_key: Path | None = None) -> dict[str, Any]:
    """The public keys to check signatures with: key id → (key, the file it came from)."""

    if not paths:
        path = _signing_key_file(audit_key, public_too=True)
        return {(k := AuditKey.load(path)).id: (k.public, str(path))}
    keys = {}
    for path in paths:
        public = load_public_key(_read_key(path), str(path))
        keys[key_id(public)] = (public, str(path))
    return keys


def _read_key(path: Path) -> bytes:

    try:
        return path.read_bytes()
    except OSError as e:
        raise AuditKeyError(str(path), e.strerror or str(e)) from e


@audit_app.command("verify")
@handled
def audit_verify(
    db: Db = None, key: PublicKeys = None, audit_key: AuditKeyFile = None, as_json: Json = False
) -> None:
    """Check the whole trail, and the trail against the events: exit 0 if intact, 1 naming
    the first record that breaks it or the first decision event without its record."""

    with Store(db, mode="existing") as store:
        keys = _public_keys(key, audit_key)
        verdict = verify_trail(store, {k: public for k, (public, _) in keys.items()})
    if as_json:
        out.print_json(data=asdict(verdict) | {"intact": verdict.intact})
    elif verdict.intact:
        out.print(
            f"audit trail intact: {_count(verdict.records, 'record')}, "
            f"{_count(verdict.signatures, 'signature')}, key {', '.join(keys)}; "
            f"{_count(verdict.decisions or 0, 'decision event')}, each accounted for"
        )
    elif verdict.foreign_key is not None:
        given = "; ".join(f"{k}, {source}" for k, (_, source) in keys.items())
        if verdict.signatures == 0:
            said = (
                f"audit trail signed by key {verdict.foreign_key}, not the key given "
                f"({given}): no sign of tampering, the wrong key; pass the key that signed "
                "it with --audit-key PATH, or its public half with --key PUB.pem"
            )
        else:
            said = (
                f"audit trail checked up to record {verdict.records}; record {verdict.bad} "
                f"is signed by key {verdict.foreign_key}, not the key given ({given}): if "
                "the key was rotated, pass each public key (--key old.pem --key new.pem)"
            )
        err.print(f"[bold red]error:[/] {_esc(said)}", markup=True)
    elif verdict.gap:
        err.print(
            f"[bold red]audit trail does not match the events:[/] {_esc(verdict.gap)}",
            markup=True,
        )
    else:
        err.print(
            f"[bold red]audit trail broken at record {verdict.bad}:[/] "
            f"{_esc(verdict.problem)} ({_count(verdict.records, 'record')} before it "
            f"{'is' if verdict.records == 1 else 'are'} intact)",
            markup=True,
        )
    if not verdict.intact:
        raise typer.Exit(1)


@audit_app.command("export")
@handled
def audit_export(
    episode: Annotated[str, typer.Argument(help="The episode's id.")],
    db: Db = None,
    audit_key: AuditKeyFile = None,
) -> None:
    """Print an episode's evidence bundle (a signed DSSE envelope) as JSON."""

    episode_id = _episode_id(episode, db)
    key = AuditKey.load(_signing_key_file(audit_key))
    with Store(db, mode="existing") as store:
        load_timeline(store, episode_id)  # EpisodeNotFound for an unknown id
        bundle = export_bundle(store, str(episode_id), key, datetime.now(UTC))
    sys.stdout.write(json.dumps(bundle, indent=2) + "\n")


@audit_app.command("verify-bundle")
@handled
def audit_verify_bundle(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle from `tether audit export`.")],
    key: Annotated[Path, typer.Option("--key", help="The signer's public key (PEM).")],
) -> None:
    """Check an evidence bundle with the public key alone: exit 0 if it is intact."""

    [(public, _)] = _public_keys([key]).values()
    try:
        data = json.loads(bundle.read_text())
    except OSError as e:
        raise EvidenceError(f"{bundle}: {e.strerror or e}") from e
    except ValueError as e:
        raise EvidenceError(f"{bundle}: not JSON ({e})") from e
    checked = verify_bundle(data, public)
    out.print(
        f"evidence intact: episode {checked.episode}, {_count(checked.records, 'record')}, "
        f"signed by key {checked.key}"
    )


@audit_app.command("key")
@handled
def audit_key_public(audit_key: AuditKeyFile = None) -> None:
    """Print the signing key's public half (PEM), creating the key if it does not exist."""

    path = resolve_key_path(audit_key)
    key = AuditKey.load(path, create=True)
    sys.stdout.write(public_pem(key.public).decode())
    err.print(f"key {key.id} ({path})")


def main() -> None:
    """Entry point of the ``tether`` script."""
    app()


# --- tether db: the store's schema ---------------------------------------------------------
# (A block of its own: it moves whole into the cli package's module for the store.)

db_app = typer.Typer(
    help="The store's schema: upgrade a store an older tether made.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
@handled
def db_upgrade(db: Db = None) -> None:
    """Bring the store's schema up to this tether's (back the store up first). A store
    that is up to date is left as it is; one a newer tether made is refused."""

    out.print(upgrade_schema(db), markup=False)
