"""Commands on what the fleet remembers: facts, and forgetting them (forget, redact, retain)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from tether.memory._steps import parse_step
from tether.memory.errors import ConfigError, NotFound
from tether.memory.forgetting import erase_subject, redact_step, retain_episodes
from tether.memory.org import OrgMemory, Retention
from tether.memory.schema import upgrade as upgrade_schema
from tether.memory.sources import SystemClock
from tether.memory.store import Store
from tether.runtime.cli._render import _count, _esc, _table, out
from tether.runtime.cli._shared import Approver, Db, Json, _current_user, _episode_id, handled


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


@handled
def db_upgrade(db: Db = None) -> None:
    """Bring the store's schema up to this tether's; back the store up first."""
    out.print(upgrade_schema(db), markup=False)
