"""History files: one recorded episode's events, exported to a small JSON file and
imported into a fresh store, where the current code reads them as it reads a database.

What an episode's history holds, in recorded order: its own stream, each agent's stream
and mailbox, the approval and escalation streams it opened, the effects-ledger entries of
its side effects, the org-memory streams of the subjects it recorded facts about, the
erasure receipts of its subject, and (``audit=True``) the audit trail. That is all that
re-execution (``runtime/reexecute.py``), the timeline and ``tether audit verify`` read.

Each event is kept as the mapper stored it (``memory/_codec.py``): its topic and its
state, the JSON the database holds. Importing writes those states back unchanged, so an
old file is decoded by the current mapper, upcasters included, exactly as an old
database would be. One difference, for files that stay the same when recorded again: a
field sealed under a subject's key (``memory/_keys.py``: a random key, a random nonce) is
kept **opened**, ``{"_type_": "sealed", "_data_": {"s", "f", "k", "open": value}}``, and
sealed again under the importing store's key. A field whose subject was erased cannot be
opened; it is kept sealed, without its ciphertext, and reads as erased after import as
it did before. An exported file therefore holds its subjects' personal data in the
clear: treat it as you treat the database.

The audit trail is one chain across every episode of a store: it is exported only
whole, from a store that holds this episode alone (a recording made for the file).
Records are copied with their hashes and signatures (each body as JSON, written again in
its canonical text), and verify with the recording's key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from eventsourcing.persistence import JSONTranscoder, StoredEvent

from tether.memory.errors import ConfigError, EpisodeNotFound

from ._codec import new_mapper
from ._keys import Sealed
from .audit import canonical
from .events import (
    ActionExecuted,
    ApprovalAwaited,
    EffectUncertain,
    EpisodeEscalated,
    EpisodeStarted,
    FactConflicted,
    FactRecorded,
    agent_stream_id,
    effect_stream_id,
    erasure_stream_id,
    mailbox_stream_id,
    subject_stream_id,
)
from .store import Store

FORMAT = "tether-history"
"""The ``format`` of a history file."""
VERSION = 1
"""The file layout this module writes and reads. The events' shapes are versioned apart,
per event class, by the mapper's upcasters."""


def export_episode(
    store: Store, episode_id: uuid.UUID, *, audit: bool = True, note: str = ""
) -> dict[str, Any]:
    """The history of one episode (see the module's docstring), ready for ``write_history``."""
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    streams = _streams_of(store, own[0])
    rows = store.recorder.select_streams(streams)
    opener = _Opener(store)
    events = [
        {
            "n": int(n),
            "stream": str(stream),
            "position": int(position),
            "topic": topic,
            "state": opener.open(bytes(state)),
        }
        for n, stream, position, topic, state in rows
    ]
    history: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "episode": str(episode_id),
        "note": note,
        "events": events,
    }
    if audit:
        history["audit"] = _audit_records(store, str(episode_id))
    return history


def _streams_of(store: Store, started: EpisodeStarted) -> list[uuid.UUID]:
    """Every stream that holds part of the episode's story."""
    episode_id = started.originator_id
    streams = [episode_id]
    for name in started.agents:
        streams += [agent_stream_id(episode_id, name), mailbox_stream_id(episode_id, name)]
    for _, e in store.read_streams(list(streams)):
        if isinstance(e, ApprovalAwaited):
            streams.append(e.approval_id)
        elif isinstance(e, EpisodeEscalated | EffectUncertain):
            streams.append(e.escalation_id)
        if isinstance(e, ActionExecuted | EffectUncertain) and e.effect_key:
            streams.append(effect_stream_id(e.effect_key))
    # A subject's facts are one stream that many episodes share: it goes whole.
    subjects = {started.subject} if started.subject else set()
    for _, fact in store.of_type(FactRecorded, FactConflicted):
        source: Any = fact.source if isinstance(fact, FactRecorded) else None
        if isinstance(fact, FactConflicted):
            source = fact.offered.get("source")
        if isinstance(source, dict) and source.get("episode") == str(episode_id):
            subjects.add(getattr(fact, "subject", ""))
    for subject in sorted(subjects):
        streams += [subject_stream_id(subject), erasure_stream_id(subject)]
    return list(dict.fromkeys(streams))


def _audit_records(store: Store, episode: str) -> list[dict[str, Any]]:
    records = list(store.audit.records())
    others = sorted({str(r.fields.get("episode")) for r in records} - {episode, "None"})
    if others:
        raise ConfigError(
            f"audit: the trail also holds records of episode {others[0]}; it is one chain "
            "and is exported only whole: export from a store that holds this episode alone, "
            "or pass audit=False"
        )
    # The body is kept as JSON, not as its text: its canonical text (``audit.canonical``)
    # is what its hash covers, and it is written again on import.
    return [
        {"seq": r.seq, "body": r.fields, "hash": r.hash, "sig": r.sig, "key": r.key}
        for r in records
    ]


class _Opener:
    """Opens the sealed fields of stored states, and seals opened ones again."""

    def __init__(self, store: Store) -> None:
        self.store = store
        transcoder = store.mapper.transcoder
        assert isinstance(transcoder, JSONTranscoder)
        self.sealing = transcoder.names["sealed"]
        self.plain = new_mapper().transcoder
        """Turns an opened value into JSON and back (ids, decimals, times)."""

    def open(self, state: bytes) -> dict[str, Any]:
        fields: dict[str, Any] = orjson.loads(state)
        for name, value in fields.items():
            sealed = _sealed(value)
            if sealed is None:
                continue
            if self.store.keys.get(sealed["s"]) is None:  # erased: it can never be opened
                opened = {"s": sealed["s"], "f": sealed["f"], "k": sealed["k"], "n": "", "c": ""}
            else:
                plain = self.plain.encode(self.sealing.decode(sealed))
                opened = {"s": sealed["s"], "f": sealed["f"], "k": sealed["k"]}
                opened["open"] = orjson.loads(plain)
            fields[name] = {"_type_": "sealed", "_data_": opened}
        return fields

    def seal(self, fields: dict[str, Any]) -> bytes:
        for name, value in fields.items():
            sealed = _sealed(value)
            if sealed is not None and "open" in sealed:
                plain = self.plain.decode(orjson.dumps(sealed["open"]))
                again = self.sealing.encode(Sealed(sealed["s"], sealed["f"], plain))
                fields[name] = {"_type_": "sealed", "_data_": again}
        return orjson.dumps(fields)


def _sealed(value: Any) -> dict[str, Any] | None:
    """The envelope's data if ``value`` is a sealed field (``memory/_keys.py``)."""
    if type(value) is dict and value.get("_type_") == "sealed" and len(value) == 2:
        data = value.get("_data_")
        if isinstance(data, dict):
            return data
    return None


def import_history(store: Store, history: Mapping[str, Any], source: str = "history") -> uuid.UUID:
    """Load a history into ``store``, which must hold no events yet; return its episode.

    ``source`` names the history in messages (its file). The events are written in their
    recorded order, their states as the file holds them (opened fields sealed again under
    this store's keys); audit records are copied as they are.
    """
    _check(history, source)
    if store.recorder.max_notification_id() is not None:
        raise ConfigError(
            f"{source}: a history is imported into a fresh store, and {store.url} already "
            "holds events; import it into a new database"
        )
    rows = _audit_rows(history.get("audit") or (), source)
    if rows and store.audit.head()[0]:
        raise ConfigError(
            f"{source}: the store's audit trail is not empty; import into a new database"
        )
    store.recorder.insert_events(_stored_events(store, history["events"], source))
    if rows:
        with store.writing() as conn:
            conn.execute(sa.insert(store.audit.table), rows)
    return uuid.UUID(history["episode"])


def _stored_events(store: Store, events: list[Any], source: str) -> list[StoredEvent]:
    """The records to write for a history's events, opened fields sealed again."""
    opener = _Opener(store)
    shredded = {
        sealed["s"]
        for e in events
        if isinstance(e, dict) and isinstance(e.get("state"), dict)
        for value in e["state"].values()
        if (sealed := _sealed(value)) is not None and "open" not in sealed
    }
    out = []
    for i, e in enumerate(events):
        try:
            state = dict(e["state"])
            for value in state.values():
                sealed = _sealed(value)
                if sealed is not None and "open" in sealed and sealed["s"] in shredded:
                    # Sealing it again would give the erased subject a key once more.
                    raise ConfigError(
                        f"{source}: events[{i}]: subject {sealed['s']!r} is both erased and "
                        "readable in this history; record it again"
                    )
            stream, position = uuid.UUID(e["stream"]), int(e["position"])
            out.append(StoredEvent(stream, position, str(e["topic"]), opener.seal(state)))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"{source}: events[{i}] is not a recorded event ({type(error).__name__}: "
                f"{error}); export the episode again with export_episode"
            ) from error
    return out


def _audit_rows(records: Iterable[Any], source: str) -> list[dict[str, Any]]:
    """The audit table's rows for a history's records, each body in its canonical text."""
    try:
        return [
            {
                "seq": int(r["seq"]),
                "episode": r["body"].get("episode"),
                "body": canonical(r["body"]).decode(),
                "hash": str(r["hash"]),
                "sig": r["sig"],
                "key": r["key"],
            }
            for r in records
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ConfigError(
            f"{source}: 'audit' holds something that is not an audit record "
            f"({type(error).__name__}: {error}); export the episode again with export_episode"
        ) from error


def _check(history: Mapping[str, Any], source: str) -> None:
    """``ConfigError`` naming the field and the fix if ``history`` is not one this reads."""
    if not isinstance(history, Mapping) or history.get("format") != FORMAT:
        raise ConfigError(
            f"{source}: not a tether history (its 'format' is not {FORMAT!r}); "
            "export one with tether.memory.histories.export_episode"
        )
    if history.get("version") != VERSION:
        raise ConfigError(
            f"{source}: history file version {history.get('version')!r}, and this tether "
            f"reads version {VERSION}; export it again with this tether"
        )
    if not isinstance(history.get("events"), list) or not history["events"]:
        raise ConfigError(f"{source}: 'events' must be a non-empty list of recorded events")
    try:
        uuid.UUID(str(history.get("episode")))
    except ValueError:
        raise ConfigError(f"{source}: 'episode' must be the episode's id") from None


def write_history(path: Path, history: Mapping[str, Any]) -> None:
    """Write a history as stable, reviewable JSON: one event, or audit record, a line."""
    lines = ["{"]
    for key in ("format", "version", "episode", "note"):
        lines.append(f" {json.dumps(key)}: {_compact(history[key])},")
    for key in ("events", "audit"):
        if key not in history:
            continue
        items = [f"  {_compact(item)}" for item in history[key]]
        lines.append(f' "{key}": [\n' + ",\n".join(items) + "\n ],")
    lines[-1] = lines[-1].removesuffix(",")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_history(path: Path) -> dict[str, Any]:
    """A history file, parsed; ``ConfigError`` naming the file if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}; give the path of a history file") from e
    try:
        history = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e}); a history file is JSON") from e
    _check(history, str(path))
    assert isinstance(history, dict)
    return history
