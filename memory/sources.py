"""Where time and ids come from: injected, so a replay can feed recorded values back."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the time. Logic asks a clock; it never calls ``datetime.now()``."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class Ids(Protocol):
    """Hands out new ids. Logic asks this; it never calls ``uuid4()``."""

    def new(self) -> uuid.UUID:
        """A fresh, unique id."""
        ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIds:
    """Random version-4 UUIDs."""

    def new(self) -> uuid.UUID:
        return uuid.uuid4()


class StepClock:
    """A deterministic clock for tests: starts at ``start`` and moves ``step`` per read."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(seconds=1)):
        self._at = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._step = step

    def now(self) -> datetime:
        at = self._at
        self._at += self._step
        return at


class SequentialIds:
    """Deterministic ids for tests: 00000000-...-000000000001, ...002, ..."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def new(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._counter))
