"""tether.topologies: how a user describes a fleet."""

from .loader import Loaded, load_file, load_module
from .policy import Policy, Rule, When
from .rails import (
    AllowedDomains,
    AllowedPaths,
    AllowedValues,
    Forbidden,
    Provenance,
    RateLimit,
    ReadOnly,
    SpendCap,
)
from .shapes import critic_loop, map_reduce, pipeline, supervisor_workers, swarm
from .spec import (
    Agent,
    Approvals,
    ApprovalThreshold,
    Budget,
    Grant,
    Restarts,
    Retries,
    Role,
    Stuck,
    Supervisor,
)
from .stage import ActionView, StageOutcome
from .topology import Topology

__all__ = [
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
]
