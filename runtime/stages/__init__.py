"""The gate's stages, one module each, run in this order for every action:
boundaries → budget → governance → approval → execution → verification → record, with
the stages a topology adds each after the one it names.

Every stage has one interface (``topologies/stage.py``): ``async def check(action) ->
StageOutcome``. A stage of tether's own records its events, each kind of which says how
it is audited and shown (``memory/events/gate.py``); adding one is its module, its event,
and its place in ``BUILT_IN``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.memory.errors import ConfigError
from tether.topologies.stage import CustomStage, Stage

from .approval import ApprovalStage
from .base import ActionInFlight, Asked, OpenAction, run_now
from .boundaries import BoundariesStage
from .budget import BudgetStage
from .custom import AddedStage
from .execution import ExecutionStage
from .governance import GovernanceStage
from .record import RecordStage
from .verification import VerificationStage

if TYPE_CHECKING:
    from ..gate import Gate

BUILT_IN = (
    BoundariesStage,
    BudgetStage,
    GovernanceStage,
    ApprovalStage,
    ExecutionStage,
    VerificationStage,
    RecordStage,
)
"""The gate's own stages, in order. The last, record, closes every action that ends."""


def gate_stages(gate: Gate, added: tuple[CustomStage, ...] = ()) -> list[Stage[ActionInFlight]]:
    """One agent's stages in order: the gate's own, each followed by the stages a topology
    added after it (in the order they are declared)."""
    own: list[Stage[ActionInFlight]] = [cls(gate) for cls in BUILT_IN]
    names = {s.name for s in own}
    for i, stage in enumerate(added):
        if stage.name in names:
            raise ConfigError(
                f"topology.stages[{i}].name: {stage.name!r} is one of the gate's own stages "
                f"({', '.join(s.name for s in own)}); give the stage another name"
            )
    out: list[Stage[ActionInFlight]] = []
    for s in own:
        out.append(s)
        out += [AddedStage(a, gate) for a in added if a.after == s.name]
    return out


__all__ = [
    "BUILT_IN",
    "ActionInFlight",
    "Asked",
    "OpenAction",
    "gate_stages",
    "run_now",
]
