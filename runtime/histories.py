"""Re-executing a history file (``memory/histories.py``) with the current code.

The history is imported into a scratch store and re-executed there
(``runtime/reexecute.py``) under the topology its episode was started from, loaded as it
is now: a change of code or topology that the recorded episode would not survive is
reported as the first divergence, as for an episode of a live store.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from tether.memory.episodes import runnable
from tether.memory.errors import EpisodeNotFound
from tether.memory.events import EpisodeStarted
from tether.memory.histories import import_history, read_history
from tether.memory.store import Store
from tether.topologies.loader import load_source
from tether.topologies.topology import Topology

from .reexecute import Reexecution, reexecute


def recorded_topology(store: Store, episode_id: uuid.UUID, root: Path | None = None) -> Topology:
    """The topology an episode was started from, loaded from its source as it is now; a
    relative file path is taken from ``root`` (default: the working directory)."""
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    source = dict(runnable(own[0]).source)
    if source.get("kind") == "file" and root is not None:
        source["path"] = str(root / str(source["path"]))
    return load_source(source).topology


def reexecute_history(
    path: Path, *, topology: Topology | None = None, root: Path | None = None
) -> Reexecution:
    """Import the history at ``path`` into a scratch store and re-execute its episode with
    ``topology`` (default: the one it was started from, as it is now). An erased
    episode raises ``EpisodeErased``, as re-executing it in its own store does."""
    history = read_history(path)
    with tempfile.TemporaryDirectory(prefix="tether-history-") as scratch:
        with Store(
            f"sqlite:///{Path(scratch) / 'history.db'}", audit_key=Path(scratch) / "audit.key"
        ) as store:
            episode = import_history(store, history, str(path))
            chosen = topology or recorded_topology(store, episode, root)
            return reexecute(store, episode, chosen)
