"""tether.topologies: how a user describes a fleet."""

from .loader import Loaded, load_file, load_module
from .policy import Policy, Rule, When
from .spec import (
    Agent,
    AllowedValues,
    Approvals,
    ApprovalThreshold,
    Budget,
    Grant,
    Provenance,
    Role,
    SpendCap,
    Supervisor,
    Topology,
)

__all__ = [
    "Agent",
    "AllowedValues",
    "ApprovalThreshold",
    "Approvals",
    "Budget",
    "Grant",
    "Loaded",
    "Policy",
    "Provenance",
    "Role",
    "Rule",
    "SpendCap",
    "Supervisor",
    "Topology",
    "When",
    "load_file",
    "load_module",
]
