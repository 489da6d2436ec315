"""`tether status`: the fleet's tree of running and waiting episodes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from tether.memory.episodes import list_episodes
from tether.memory.errors import ConfigError
from tether.memory.store import Store
from tether.runtime.cli._render import _TTY, _esc, _status_tree, out
from tether.runtime.cli._shared import Db, Json, _db_flag, _prog, handled
from tether.runtime.status import fleet_status


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
