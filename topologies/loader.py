"""Finding a topology: in a user's Python file, or in an importable module.

A topology file defines a ``Topology`` at module level (named ``topology``, or the only
one), and may define ``task`` (the entry agent's input, a dict) and ``context`` (trusted
records the rails may rely on, a dict). Where a topology came from is recorded with the
episode, so ``tether resume`` can load it again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.memory.errors import TetherError, TopologyLoadError

from .topology import Topology


@dataclass(frozen=True)
class Loaded:
    """A topology, where it came from, and the file's default input."""

    topology: Topology
    """The fleet."""
    source: dict[str, Any]
    """How to load it again: ``{"kind": "file"|"module"|"python", ...}``."""
    task: dict[str, Any] | None = None
    """The file's ``task``, if it defines one."""
    context: dict[str, Any] = field(default_factory=dict)
    """The file's ``context``, if it defines one."""
    subject: str | None = None
    """The file's ``subject``: the data subject its episodes are about, if any."""

    def fingerprint(self) -> dict[str, str]:
        """Hashes of what defines the fleet: ``policy`` (its grants, rails and rules:
        ``Topology.policy_hash``) and, when it came from a file or a module, ``file``
        (the SHA-256 of that file's bytes). Recorded when an episode starts; a resume
        under a different one is refused unless accepted."""
        found = {"policy": self.topology.policy_hash()}
        path: str | None = None
        if self.source.get("kind") == "file":
            path = str(self.source["path"])
        elif self.source.get("kind") == "module":
            spec = importlib.util.find_spec(str(self.source["module"]))
            path = spec.origin if spec is not None else None
        if path is not None and Path(path).is_file():
            found["file"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return found


def load_file(path: str | Path, attr: str | None = None) -> Loaded:
    """Import a topology file and find its topology."""
    p = Path(path).expanduser().resolve()
    shown = str(path)
    if not p.is_file():
        raise TopologyLoadError(
            shown, "no such file; give the path of a Python file that defines a Topology"
        )
    if p.suffix != ".py":
        raise TopologyLoadError(shown, "not a Python file (.py)")
    name = "tether_topology_" + hashlib.sha256(str(p).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise TopologyLoadError(shown, "cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # No bytecode cache for topology files: an edit made within the cache's one-second
    # resolution must never run the old code (re-execution tests a changed file).
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    except TetherError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        where = _line_of(e, p)
        raise TopologyLoadError(shown, f"{where}{type(e).__name__}: {e}") from e
    finally:
        sys.dont_write_bytecode = writes
    source = {"kind": "file", "path": str(p), "module": name}
    return _from_module(module, shown, attr, source)


def load_module(module_name: str, attr: str | None = None) -> Loaded:
    """Find a topology in an importable module (``tether.topologies.demo``)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TopologyLoadError(module_name, f"cannot be imported: {e}") from e
    return _from_module(module, module_name, attr, {"kind": "module", "module": module_name})


def load_source(source: dict[str, Any]) -> Loaded:
    """Load a topology again from a recorded source."""
    kind = source.get("kind")
    if kind == "file":
        return load_file(source["path"], source.get("attr"))
    if kind == "module":
        return load_module(source["module"], source.get("attr"))
    how = source.get("resume")  # (a command that rebuilds it, e.g. the live demo's)
    raise TopologyLoadError(
        str(source.get("name", "topology")),
        "this episode was started from Python code, not a file; "
        + (
            f"resume it with `{how} EPISODE`"
            if how
            else "resume it from Python with tether.runtime.resume(episode_id, topology=...)"
        ),
    )


def _from_module(module: Any, shown: str, attr: str | None, source: dict[str, Any]) -> Loaded:
    if attr is not None:
        found = getattr(module, attr, None)
        if not isinstance(found, Topology):
            raise TopologyLoadError(shown, f"has no Topology named {attr!r}")
    else:
        candidates = {k: v for k, v in vars(module).items() if isinstance(v, Topology)}
        if "topology" in candidates:
            attr, found = "topology", candidates["topology"]
        elif len(candidates) == 1:
            attr, found = next(iter(candidates.items()))
        elif not candidates:
            raise TopologyLoadError(
                shown,
                "defines no Topology; assign one to a module-level "
                "name such as `topology = Topology(...)`",
            )
        else:
            raise TopologyLoadError(
                shown,
                f"defines several topologies {sorted(candidates)}; "
                "name one `topology` or pass --attr",
            )
    task = getattr(module, "task", None)
    context = getattr(module, "context", None) or {}
    subject = getattr(module, "subject", None)
    if subject is not None and not isinstance(subject, str):
        raise TopologyLoadError(shown, "`subject` must be a string such as 'customer:ada'")
    if task is not None and not isinstance(task, dict):
        raise TopologyLoadError(shown, "`task` must be a dict (the entry agent's input)")
    if not isinstance(context, dict):
        raise TopologyLoadError(shown, "`context` must be a dict (trusted records)")
    return Loaded(found, {**source, "attr": attr}, task, context, subject)


def _line_of(e: BaseException, path: Path) -> str:
    tb = e.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(e, SyntaxError) and e.lineno:
        line = e.lineno
    return f"line {line}: " if line else ""
