"""tether: one import for a fleet — ``from tether import Agent, Topology, run``.

Every name here is re-exported from the package that owns it and loaded on first use
(PEP 562), so ``import tether`` costs nothing and ``tether.memory`` never imports Ray.
The layers beneath, bottom first: ``tether.memory`` (the store and the error tree),
``tether.agents`` (one agent), ``tether.topologies`` (describing a fleet),
``tether.runtime`` (running one). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_ERRORS = (
    "TetherError ConfigError TopologyError StoreUrlError TopologyLoadError AuditKeyError "
    "PolicyError AmbiguousId StoreError StoreUnavailable StoreMissing StoreNotInitialised "
    "StoreReadOnly StreamConflict StoreCorrupt StoreFormatError StoreOutdated StoreTooNew "
    "AuditTampered NotFound "
    "EpisodeNotFound ApprovalNotFound EpisodeErased EpisodeLeased LeaseLost EpisodeEnded "
    "TopologyChanged ApprovalError EvidenceError ModelError TransientModelError "
    "ScriptExhausted ToolError TransientToolError BudgetExhausted HostError"
).split()

_OWNERS: dict[str, list[str]] = {
    "tether.agents": (
        "Model ModelRequest ModelTurn OpenAIModel Price ScriptedModel Tool ToolCall "
        "ToolContext ToolSpec Usage call calls flaky handoff say tool"
    ).split(),
    "tether.topologies": (
        "ActionView Agent AllowedDomains AllowedPaths AllowedValues ApprovalThreshold Approvals "
        "Budget StageOutcome "
        "Forbidden Grant Policy Provenance RateLimit ReadOnly Restarts Retries Role Rule "
        "SpendCap Stuck Supervisor Topology When critic_loop load_file map_reduce pipeline "
        "supervisor_workers swarm"
    ).split(),
    "tether.memory": (
        "SequentialIds StepClock Store diff_episodes erase_subject fork_episode "
        "list_episodes load_timeline"
    ).split(),
    "tether.memory.errors": _ERRORS,
    "tether.runtime": "EpisodeReport Host Inbox LocalHost RootSupervisor resume run".split(),
}

_WHERE = {name: module for module, names in _OWNERS.items() for name in names}

__all__ = [
    "ActionView",
    "Agent",
    "AllowedDomains",
    "AllowedPaths",
    "AllowedValues",
    "AmbiguousId",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalThreshold",
    "Approvals",
    "AuditKeyError",
    "AuditTampered",
    "Budget",
    "BudgetExhausted",
    "ConfigError",
    "EpisodeEnded",
    "EpisodeErased",
    "EpisodeLeased",
    "EpisodeNotFound",
    "EpisodeReport",
    "EvidenceError",
    "Forbidden",
    "Grant",
    "Host",
    "HostError",
    "Inbox",
    "LeaseLost",
    "LocalHost",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelTurn",
    "NotFound",
    "OpenAIModel",
    "Policy",
    "PolicyError",
    "Price",
    "Provenance",
    "RateLimit",
    "ReadOnly",
    "Restarts",
    "Retries",
    "Role",
    "RootSupervisor",
    "Rule",
    "ScriptExhausted",
    "ScriptedModel",
    "SequentialIds",
    "SpendCap",
    "StageOutcome",
    "StepClock",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreFormatError",
    "StoreMissing",
    "StoreNotInitialised",
    "StoreOutdated",
    "StoreReadOnly",
    "StoreTooNew",
    "StoreUnavailable",
    "StoreUrlError",
    "StreamConflict",
    "Stuck",
    "Supervisor",
    "TetherError",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolSpec",
    "Topology",
    "TopologyChanged",
    "TopologyError",
    "TopologyLoadError",
    "TransientModelError",
    "TransientToolError",
    "Usage",
    "When",
    "call",
    "calls",
    "critic_loop",
    "diff_episodes",
    "erase_subject",
    "flaky",
    "fork_episode",
    "handoff",
    "list_episodes",
    "load_file",
    "load_timeline",
    "map_reduce",
    "pipeline",
    "resume",
    "run",
    "say",
    "supervisor_workers",
    "swarm",
    "tool",
]

if TYPE_CHECKING:
    from tether.agents import (
        Model,
        ModelRequest,
        ModelTurn,
        OpenAIModel,
        Price,
        ScriptedModel,
        Tool,
        ToolCall,
        ToolContext,
        ToolSpec,
        Usage,
        call,
        calls,
        flaky,
        handoff,
        say,
        tool,
    )
    from tether.memory import (
        SequentialIds,
        StepClock,
        Store,
        diff_episodes,
        erase_subject,
        fork_episode,
        list_episodes,
        load_timeline,
    )
    from tether.memory.errors import (
        AmbiguousId,
        ApprovalError,
        ApprovalNotFound,
        AuditKeyError,
        AuditTampered,
        BudgetExhausted,
        ConfigError,
        EpisodeEnded,
        EpisodeErased,
        EpisodeLeased,
        EpisodeNotFound,
        EvidenceError,
        HostError,
        LeaseLost,
        ModelError,
        NotFound,
        PolicyError,
        ScriptExhausted,
        StoreCorrupt,
        StoreError,
        StoreFormatError,
        StoreMissing,
        StoreNotInitialised,
        StoreOutdated,
        StoreReadOnly,
        StoreTooNew,
        StoreUnavailable,
        StoreUrlError,
        StreamConflict,
        TetherError,
        ToolError,
        TopologyChanged,
        TopologyError,
        TopologyLoadError,
        TransientModelError,
        TransientToolError,
    )
    from tether.runtime import EpisodeReport, Host, Inbox, LocalHost, RootSupervisor, resume, run
    from tether.topologies import (
        ActionView,
        Agent,
        AllowedDomains,
        AllowedPaths,
        AllowedValues,
        Approvals,
        ApprovalThreshold,
        Budget,
        Forbidden,
        Grant,
        Policy,
        Provenance,
        RateLimit,
        ReadOnly,
        Restarts,
        Retries,
        Role,
        Rule,
        SpendCap,
        StageOutcome,
        Stuck,
        Supervisor,
        Topology,
        When,
        critic_loop,
        load_file,
        map_reduce,
        pipeline,
        supervisor_workers,
        swarm,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
