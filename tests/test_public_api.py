"""Each package's public surface is deliberate: changing it changes this test."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import pytest

import tether

SURFACES = {
    "tether.agents": [
        "DELEGATE",
        "HANDOFF",
        "ActionGate",
        "ActionResult",
        "AgentLoop",
        "AgentOutcome",
        "FanOut",
        "Message",
        "Model",
        "ModelRequest",
        "ModelTurn",
        "OpenAIModel",
        "Price",
        "ScriptedModel",
        "Tool",
        "ToolCall",
        "ToolContext",
        "ToolSpec",
        "Usage",
        "call",
        "calls",
        "flaky",
        "handoff",
        "say",
        "tool",
    ],
    "tether.memory": [
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
    ],
    "tether.runtime": [
        "EpisodeReport",
        "Gate",
        "Host",
        "Inbox",
        "LocalHost",
        "RootSupervisor",
        "resume",
        "run",
    ],
    "tether.topologies": [
        "ActionView",
        "Agent",
        "AllowedDomains",
        "AllowedPaths",
        "AllowedValues",
        "ApprovalThreshold",
        "Approvals",
        "Budget",
        "Forbidden",
        "Grant",
        "Loaded",
        "Policy",
        "Provenance",
        "RateLimit",
        "ReadOnly",
        "Restarts",
        "Retries",
        "Role",
        "Rule",
        "SpendCap",
        "StageOutcome",
        "Stuck",
        "Supervisor",
        "Topology",
        "When",
        "critic_loop",
        "load_file",
        "load_module",
        "map_reduce",
        "pipeline",
        "supervisor_workers",
        "swarm",
    ],
}


MODULES = {
    "memory": "audit backend backends compare coverage episodes errors events events.approvals "
    "events.episode events.gate events.memory forgetting histories inmemory leases org postgres "
    "recorder schema sources sqlite store",
    "agents": "builtins conduct fanout loop model openai_compat scripted secrets tools",
    "topologies": "demo loader policy rails shapes spec stage topology validation",
    "runtime": "actor boundaries budget cli cli.audit cli.episodes cli.inbox cli.memory cli.status "
    "delegate escalation evidence gate governance handles histories host inbox launch "
    "model_server reexecute restarts stages stages.approval stages.base stages.boundaries "
    "stages.budget stages.custom stages.execution stages.governance stages.record "
    "stages.verification status supervisor",
}
"""The modules without a leading underscore, per package: the ones a user (or a backend,
a stage, a tool written outside tether) may import. Everything else is private."""


def test_a_module_is_public_only_on_purpose() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    found = {}
    for package in MODULES:
        names = set()
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root / package).with_suffix("").parts
            if "migrations" in parts or any(p.startswith("_") and p != "__init__" for p in parts):
                continue
            names.add(".".join(p for p in parts if p != "__init__"))
        found[package] = sorted(n for n in names if n)
    assert found == {p: sorted(m.split()) for p, m in MODULES.items()}


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACES[package])
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_every_error_descends_from_tether_error() -> None:
    from tether.memory import errors

    classes = [
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__
    ]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, errors.TetherError), cls
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} is missing from the drawn tree"


def test_one_import_for_users_reexports_the_owners_objects() -> None:
    # `from tether import Agent, Topology, run` hands out the very objects the packages
    # define, so isinstance checks and docs agree whichever import a user wrote.
    from tether.agents import ScriptedModel, tool
    from tether.memory.errors import TetherError
    from tether.runtime import LocalHost, run
    from tether.topologies import Agent, Supervisor, Topology

    assert tether.Agent is Agent and tether.Supervisor is Supervisor
    assert tether.Topology is Topology and tether.ScriptedModel is ScriptedModel
    assert tether.tool is tool and tether.run is run and tether.LocalHost is LocalHost
    assert tether.TetherError is TetherError
    for name in tether.__all__:
        assert getattr(tether, name) is not None, name
    # Every error a user may catch is one import away.
    from tether.memory import errors

    raised = {
        n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)
    }
    assert raised <= set(tether.__all__), raised - set(tether.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Agnet'"):
        _ = tether.Agnet  # type: ignore[attr-defined]


def test_importing_the_store_or_the_facade_never_imports_ray() -> None:
    code = (
        "import sys, tether, tether.memory\n"
        "from tether import Agent, Topology, ScriptedModel, tool, run, Store\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
