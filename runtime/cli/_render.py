"""How the CLI shows things: consoles, counts, timelines, the live progress line, status trees."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tether.memory.episodes import Timeline, load_timeline
from tether.memory.events import Event
from tether.memory.sources import SystemClock
from tether.memory.store import Store
from tether.runtime.budget import dollars
from tether.runtime.inbox import Inbox

# Off a terminal (a pipe, a file, CI logs), lines are not cut to 80 columns: a post-mortem
# must not lose the end of a reason.
_TTY = sys.stdout.isatty()
out = Console(highlight=False, width=None if _TTY else 10_000, soft_wrap=not _TTY)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _esc(text: str) -> str:
    return escape(text)


def _count(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 agent``, ``2 agents``: a count and its noun, agreeing."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def _json(value: Any) -> str:
    """A value as JSON for people to read: its text in its own characters, not escapes."""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _table(*columns: str) -> Table:
    """A table whose id columns are never cut: they are what people copy."""
    table = Table()
    for c in columns:
        table.add_column(c, no_wrap=c in ("id", "episode"), overflow="fold")
    return table


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
            width = max([12, *(len(s.stage) for s in act.stages)])  # a topology's may be long
            for s in act.stages:
                hue = _TONES.get(s.tone, "white")
                note = f" [dim]({_esc(s.note)})[/]" if s.note else ""
                node.add(f"{s.stage:<{width}} [{hue}]{s.decision:<9}[/] {_esc(s.reason)}{note}")
    if t.effects:
        effects = root.add("[bold]effects[/] (the ledger: each key once)")
        for e in t.effects:
            effects.add(f"{e.key} · {e.tool} · {_esc(_json(e.result))}")
    return root


_TONES = {"refused": "red", "waiting": "yellow", "ok": "green"}
"""The colour of a stage's decision, by how its event reads it (``StageEvent.tone``)."""


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
    if not episodes:
        return "no episode is running or waiting"
    trees = []
    for e in episodes:
        tree = Tree(f"[bold]{e.episode_id}[/] · {_esc(e.topology)} · {e.status}")
        unknown = "" if e.limits_known else " [dim](limits unknown: topology not loadable)[/]"
        root = tree.add(f"{_esc(e.supervisor)}: {_budgets(e)}{unknown}")
        if e.note:
            tree.add(f"[yellow]note:[/] {_esc(e.note)}")
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
