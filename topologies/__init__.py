"""tether.topologies: how a user describes a fleet."""

from .loader import Loaded, load_file, load_module
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
    "Provenance",
    "Role",
    "SpendCap",
    "Supervisor",
    "Topology",
    "load_file",
    "load_module",
]
