"""The base of every event, and the ids of the streams derived from names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.utils import register_topic

CATALOGUE = "tether.memory.events"
"""The module every event class was defined in when the catalogue was one file."""

NAMESPACE = uuid.UUID("5d0f6a52-8f3e-4c4e-9a55-746574686572")
"""Namespace for the name-based (version 5) ids of derived streams."""


def agent_stream_id(episode_id: uuid.UUID, agent: str) -> uuid.UUID:
    """The stream of one agent within one episode."""
    return uuid.uuid5(episode_id, f"agent:{agent}")


def mailbox_stream_id(episode_id: uuid.UUID, agent: str) -> uuid.UUID:
    """The mailbox of one agent within one episode: messages other agents sent it."""
    return uuid.uuid5(episode_id, f"mailbox:{agent}")


def effect_stream_id(key: str) -> uuid.UUID:
    """The effects-ledger stream of one idempotency key."""
    return uuid.uuid5(NAMESPACE, f"effect:{key}")


def subject_stream_id(subject: str) -> uuid.UUID:
    """The org-memory stream of one data subject (``customer:ada``)."""
    return uuid.uuid5(NAMESPACE, f"subject:{subject}")


def erasure_stream_id(subject: str) -> uuid.UUID:
    """The stream of a subject's erasure receipts."""
    return uuid.uuid5(NAMESPACE, f"erasure:{subject}")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every recorded event: which stream, which position, when."""

    originator_id: uuid.UUID
    """The stream this event belongs to."""
    originator_version: int
    """Its position in that stream, from 1."""
    at: datetime
    """When it happened, from the injected clock."""

    personal: ClassVar[tuple[str, ...]] = ()
    """Fields that may carry a data subject's personal data: sealed under the subject's
    key when the event belongs to one (see ``memory/_keys.py``)."""

    TOPIC: ClassVar[str]
    """The class's name in stored events (eventsourcing reads it): ``module:class``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Stored events name their class by topic. The catalogue was one module when
        # tether first wrote them, so its classes keep that module's name (and the
        # package re-exports them to be found by it); any other subclass gets its own.
        module = cls.__module__
        if module.startswith(CATALOGUE + "."):
            module = CATALOGUE
        cls.TOPIC = f"{module}:{cls.__qualname__}"
        if module == CATALOGUE:
            # Found by its topic even where the package does not re-export it (yet).
            register_topic(cls.TOPIC, cls)
