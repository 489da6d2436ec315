"""tether.memory: the event-sourced store and what is folded from it.

The bottom layer: it imports no other tether package. The error tree lives here
(``tether.memory.errors``) so that every layer above it can raise the same errors.
"""

from .backends import DEFAULT_URL, resolve_url
from .compare import diff_episodes
from .episodes import EpisodeSummary, Timeline, fork_episode, list_episodes, load_timeline
from .forgetting import erase_subject, redact_field, retain_episodes
from .org import Fact, FactPolicy, OrgMemory, Retention
from .recorder import SqlRecorder
from .sources import Clock, Ids, RandomIds, SequentialIds, StepClock, SystemClock
from .store import Journal, Store

__all__ = [
    "DEFAULT_URL",
    "Clock",
    "EpisodeSummary",
    "Fact",
    "FactPolicy",
    "Ids",
    "Journal",
    "OrgMemory",
    "RandomIds",
    "Retention",
    "SequentialIds",
    "SqlRecorder",
    "StepClock",
    "Store",
    "SystemClock",
    "Timeline",
    "diff_episodes",
    "erase_subject",
    "fork_episode",
    "list_episodes",
    "load_timeline",
    "redact_field",
    "resolve_url",
    "retain_episodes",
]
