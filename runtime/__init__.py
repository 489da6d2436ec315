"""tether.runtime: running a fleet — the gate, hosts on Ray, the supervisor, the CLI.

The public names load on first use: the CLI's quick commands (and ``tether.memory``'s
users) should not pay for importing Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gate import Gate
    from .handles import LocalHost
    from .host import Host
    from .inbox import Inbox
    from .launch import resume, run
    from .supervisor import EpisodeReport, RootSupervisor

_LAZY = {
    "EpisodeReport": ".supervisor",
    "Gate": ".gate",
    "Host": ".host",
    "Inbox": ".inbox",
    "LocalHost": ".handles",
    "RootSupervisor": ".supervisor",
    "resume": ".launch",
    "run": ".launch",
}

__all__ = [
    "EpisodeReport",
    "Gate",
    "Host",
    "Inbox",
    "LocalHost",
    "RootSupervisor",
    "resume",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tether.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
