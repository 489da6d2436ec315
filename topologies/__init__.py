"""tether.topologies: how a user describes a fleet."""

from .loader import Loaded, load_file, load_module
from .policy import Policy, Rule, When
from .spec import (
    Agent,
    AllowedDomains,
    AllowedPaths,
    AllowedValues,
    Approvals,
    ApprovalThreshold,
    Budget,
    Forbidden,
    Grant,
    Provenance,
    RateLimit,
    ReadOnly,
    Role,
    SpendCap,
    Stuck,
    Supervisor,
    Topology,
)

__all__ = [
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
    "Role",
    "Rule",
    "SpendCap",
    "Stuck",
    "Supervisor",
    "Topology",
    "When",
    "load_file",
    "load_module",
]
