"""How events become bytes and back: eventsourcing's mapper and JSON format, made fast.

The bytes are exactly what eventsourcing's ``Mapper`` and ``JSONTranscoder`` write, and
eventsourcing's mapper reads them back to equal events (``tests/test_mapper.py`` holds the
two to that), so a tether database stays readable by eventsourcing's own tools. Only the
route is tether's, because every governed action writes nine events and a replay reads
every one:

- encoding builds its C JSON encoder once instead of per event and writes ``at``
  directly (~45% more events per second than eventsourcing's route here);
- decoding parses with orjson and then turns the ``{"_type_", "_data_"}`` objects of the
  registered transcodings back into values, innermost first, as eventsourcing's
  ``object_hook`` does; stream ids and event classes are looked up once, not per event;
  a replay's many records take ``from_rows``, which skips that walk when the bytes show
  there is nothing to revive but the timestamp.

Other event classes, a cipher or a compressor take eventsourcing's route both ways.

**Upcasting** (eventsourcing's convention, on both routes): an event class whose shape
changed declares ``class_version: ClassVar[int] = 2`` and a static method
``upcast_v1_v2(state)`` that turns a version-1 state (a dict of its fields, as decoded)
into a version-2 one in place; version 3 adds ``upcast_v2_v3``, and so on. A state
written by a versioned class carries ``"class_version"``; one without it is version 1.
On read, the state is upcast step by step to the class's version before the event is
built, so old records (a database, a committed history under ``tests/fixtures``) are
read by the current code and never rewritten. See ``docs/REPLAY-FIXTURES.md``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import json.encoder
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic, resolve_topic

from ._keys import Sealed, SealedTranscoding, SubjectKeys
from .events import Event
from .sources import SystemClock

_AT = b'{"at":{"_type_":"datetime_iso","_data_":"'


_INT_MIN, _INT_END = -(2**63), 2**64
"""The integers orjson writes (64-bit signed and unsigned); the json module writes any."""


def _wrapped_for_orjson(state: dict[str, Any]) -> bool:
    """Whether orjson writes ``state`` byte for byte as eventsourcing's transcoder does,
    once its top-level ids and times are wrapped as the transcodings wrap them (done here,
    in place). False for anything else: a value of another type, an id or time nested
    deeper (orjson would write them bare), a float the two write differently."""
    for key, v in state.items():
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if _INT_MIN <= v < _INT_END:
                continue
            return False
        if t is uuid.UUID:
            state[key] = {"_type_": "uuid_hex", "_data_": v.hex}
        elif t is datetime:
            # orjson writes a UTC or naive time exactly as ``isoformat`` does.
            zone = v.tzinfo
            iso = v if zone is UTC or zone is None else v.isoformat()
            state[key] = {"_type_": "datetime_iso", "_data_": iso}
        elif not _plain_json(v):
            return False
    return True


def _plain_json(v: Any) -> bool:
    """Whether orjson and the json module write ``v`` alike."""
    t = type(v)
    if t is str or v is None or t is bool:
        return True
    if t is int:
        return bool(_INT_MIN <= v < _INT_END)
    if t is float:
        # Inside this range both write the shortest digits without an exponent; outside
        # it they spell the exponent differently, and orjson writes NaN as null.
        return bool(v == 0 or 1e-4 <= abs(v) < 1e16)
    if t is dict:
        return all(type(k) is str and _plain_json(x) for k, x in v.items())
    if t is list:
        return all(_plain_json(x) for x in v)
    return False


def class_version(cls: type[Any]) -> int:
    """The version of an event class's shape: 1 unless it declares ``class_version``."""
    version = getattr(cls, "class_version", 1)
    if type(version) is not int or version < 1:
        raise TypeError(f"{cls.__name__}.class_version must be an integer from 1, not {version!r}")
    for v in range(1, version):
        if not callable(getattr(cls, f"upcast_v{v}_v{v + 1}", None)):
            raise TypeError(
                f"{cls.__name__} is at class_version {version} but has no upcast_v{v}_v{v + 1}: "
                f"add a static method that turns a version-{v} state into version {v + 1}"
            )
    return version


def upcast(cls: type[Any], version: int, state: dict[str, Any]) -> None:
    """Bring a decoded ``state`` of ``cls`` (with its ``class_version``, if it has one)
    up to ``version``, the class's own, in place."""
    found = state.pop("class_version", 1)
    if type(found) is not int or found > version:
        raise MapperDeserialisationError(
            f"a {cls.__name__} of class_version {found!r}, written by a newer tether than this "
            f"one (which reads up to version {version}): upgrade tether to read it"
        )
    while found < version:
        getattr(cls, f"upcast_v{found}_v{found + 1}")(state)
        found += 1


class FastTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, decoding with orjson."""

    def decode(self, data: bytes) -> Any:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            # orjson refuses what the json module accepts (NaN, Infinity) or what neither
            # can read; the json module decides which, and says why.
            return super().decode(data)
        t = type(obj)
        if (t is dict or t is list) and b'"_type_"' in data:  # else nothing to revive
            return self._revive(obj)
        return obj

    def _revive(self, obj: Any) -> Any:
        """``obj`` (a dict or list fresh from the parser) with every transcoded value,
        innermost first, turned back into its type."""
        if type(obj) is list:
            for i, v in enumerate(obj):
                t = type(v)
                if t is dict or t is list:
                    obj[i] = self._revive(v)
            return obj
        if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
            data = obj["_data_"]
            t = type(data)
            if t is dict or t is list:
                obj["_data_"] = self._revive(data)
            transcoding = self.names.get(obj["_type_"])
            if transcoding is None:
                return self._decode_obj(obj)  # raises eventsourcing's error for the name
            return transcoding.decode(obj["_data_"])
        for k, v in obj.items():
            t = type(v)
            if t is dict or t is list:
                obj[k] = self._revive(v)  # replacing a value keeps the dict's size
        return obj


class EventMapper(Mapper[uuid.UUID]):
    """eventsourcing's mapper, on tether's fast route for tether's own events."""

    def __init__(self, transcoder: JSONTranscoder) -> None:
        super().__init__(transcoder=transcoder)
        encoder = getattr(json.encoder, "c_make_encoder", None)
        # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
        # skipkeys, allow_nan): the settings of JSONTranscoder's own JSONEncoder.
        self._encode = (
            encoder(
                None,
                transcoder._encode_obj,
                json.encoder.encode_basestring,
                None,
                ":",
                ",",
                False,
                False,
                True,
            )
            if encoder is not None
            else None
        )
        self._kinds: dict[type[Any], tuple[str, bool, tuple[str, ...], int]] = {}
        """Per event class: its topic, whether it takes tether's route, its personal
        fields, its class version."""
        self._classes: dict[str, tuple[type[Any], bool, int]] = {}
        self._streams: dict[str, uuid.UUID] = {}

    def _plain(self, cls: type[Any]) -> bool:
        return issubclass(cls, Event) and self.cipher is None and self.compressor is None

    def to_stored_event(self, domain_event: Any, subject: str | None = None) -> StoredEvent:
        """The stored form of an event; ``subject``'s key seals its personal fields (an
        event that names its own subject, a fact, uses that one)."""
        cls = type(domain_event)
        kind = self._kinds.get(cls)
        if kind is None:
            kind = self._kinds[cls] = (
                get_topic(cls),
                self._plain(cls),
                getattr(cls, "personal", ()),
                class_version(cls),
            )
        topic, plain, personal, version = kind
        own = getattr(domain_event, "subject", None)
        subject = own if isinstance(own, str) else subject
        sealing = subject is not None and bool(personal)
        if not plain or (self._encode is None and not sealing):
            if sealing:
                raise ValueError(f"{cls.__name__} cannot be sealed by this mapper")
            return super().to_stored_event(domain_event)
        state = dict(domain_event.__dict__)
        originator_id = state.pop("originator_id")
        position = state.pop("originator_version")
        if version > 1:
            state["class_version"] = version  # last, where eventsourcing's mapper puts it
        data = None
        if not sealing and _wrapped_for_orjson(state):
            try:
                data = orjson.dumps(state)
            except orjson.JSONEncodeError:
                data = None
        if data is None:
            data = self._encode_slowly(domain_event, subject if sealing else None, version)
        return StoredEvent(originator_id, position, topic, data)

    def _encode_slowly(self, event: Any, subject: str | None, version: int) -> bytes:
        """The state of an event through the json module's encoder and the transcodings."""
        state = dict(event.__dict__)
        del state["originator_id"], state["originator_version"]
        state["at"] = {"_type_": "datetime_iso", "_data_": state["at"].isoformat()}
        if subject is not None:
            for name in type(event).personal:
                if state.get(name):  # an empty value carries nothing personal
                    state[name] = Sealed(subject, name, state[name])
        if version > 1:
            state["class_version"] = version
        if self._encode is not None:
            return "".join(self._encode(state, 0)).encode("utf8")
        return self.transcoder.encode(state)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        s = stored_event
        return self.from_row(s.originator_id, s.originator_version, s.topic, s.state)

    def from_row(
        self, originator_id: uuid.UUID | str, version: int, topic: str, state: bytes
    ) -> Any:
        """The event a stored row holds (its stream, position, topic and state)."""
        cls, plain, current = self._class(topic)
        if not plain:
            return super().to_domain_event(StoredEvent(originator_id, version, topic, state))
        try:
            fields = self.transcoder.decode(state)
        except Exception as e:
            msg = f"cannot decode the state of a {cls.__name__}: {e}"
            raise MapperDeserialisationError(msg) from e
        if not isinstance(fields, dict):
            msg = f"the state of a {cls.__name__} is not an object"
            raise MapperDeserialisationError(msg)
        if current > 1 or "class_version" in fields:
            upcast(cls, current, fields)
        if type(originator_id) is str:
            originator_id = self._stream(originator_id)
        fields["originator_id"] = originator_id
        fields["originator_version"] = version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", fields)
        return event

    def from_rows(
        self, rows: Iterable[tuple[int, uuid.UUID | str, int, str, bytes]]
    ) -> list[tuple[int, Any]]:
        """(notification id, event) for each (id, stream, position, topic, state) row.

        The route a replay takes. Most records hold nothing to revive but their ``at``,
        which the encoder writes first; when the bytes show that (they start with it and
        name ``_type_`` once), the event is built from orjson's dict directly (and upcast,
        if its class is at a later version). Any other record, or one the direct route
        cannot read, goes through ``from_row``.
        """
        loads, isotime, new, setattr_ = (
            orjson.loads,
            datetime.fromisoformat,
            object.__new__,
            object.__setattr__,
        )
        classes, streams = self._classes, self._streams
        out: list[tuple[int, Any]] = []
        append = out.append
        for n, originator_id, version, topic, state in rows:
            known = classes.get(topic)
            stream = streams.get(originator_id) if type(originator_id) is str else originator_id
            if (
                known is None
                or not known[1]
                or stream is None
                or type(state) is not bytes
                or not state.startswith(_AT)
                or state.count(b'"_type_"') != 1
            ):
                append((n, self.from_row(originator_id, version, topic, state)))
                continue
            try:
                fields = loads(state)
                fields["at"] = isotime(fields["at"]["_data_"])
            except Exception:
                append((n, self.from_row(originator_id, version, topic, state)))
                continue
            if known[2] > 1 or "class_version" in fields:
                upcast(known[0], known[2], fields)
            fields["originator_id"] = stream
            fields["originator_version"] = version
            event = new(known[0])
            setattr_(event, "__dict__", fields)
            append((n, event))
        return out

    def _class(self, topic: str) -> tuple[type[Any], bool, int]:
        """The event class of a topic, whether it takes tether's route, and its version."""
        known = self._classes.get(topic)
        if known is None:
            cls = resolve_topic(topic)
            known = self._classes[topic] = (cls, self._plain(cls), class_version(cls))
        return known

    def _stream(self, text: str) -> uuid.UUID:
        found = self._streams.get(text)
        if found is None:
            if len(self._streams) >= 100_000:  # a long-lived reader touches many streams
                self._streams.clear()
            found = self._streams[text] = uuid.UUID(text)
        return found


def new_mapper(keys: SubjectKeys | None = None) -> EventMapper:
    """The one mapper every event goes through; with ``keys`` it seals personal fields."""
    transcoder = FastTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DecimalAsStr())
    transcoder.register(DatetimeAsISO())
    if keys is not None:
        transcoder.register(SealedTranscoding(keys, transcoder, SystemClock()))
    return EventMapper(transcoder)


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while many events are decoded or folded.

    It runs every 700 new containers, and its older generations scan every live one, so
    decoding 100,000 events (three or four containers each, none in a cycle) took twice
    as long with it running. Reference counting still frees everything as usual.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
