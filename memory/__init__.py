"""tether.memory: the event-sourced store and what is folded from it.

Depends on no other tether package except the error tree (``tether.runtime.errors``).
"""

from .episodes import EpisodeSummary, Timeline, list_episodes, load_timeline
from .recorder import SqlRecorder
from .sources import Clock, Ids, RandomIds, SequentialIds, StepClock, SystemClock
from .store import DEFAULT_URL, Journal, Store, resolve_url

__all__ = [
    "DEFAULT_URL",
    "Clock",
    "EpisodeSummary",
    "Ids",
    "Journal",
    "RandomIds",
    "SequentialIds",
    "SqlRecorder",
    "StepClock",
    "Store",
    "SystemClock",
    "Timeline",
    "list_episodes",
    "load_timeline",
    "resolve_url",
]
