"""A fleet as a whole: a named tree of supervisors and agents, validated when it is made."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tether.agents.model import Price
from tether.memory.errors import TopologyError
from tether.memory.org import FactPolicy

from .policy import Policy
from .spec import Agent, Approvals, Supervisor, entry_agent
from .stage import CustomStage
from .validation import problems_of


@dataclass(frozen=True)
class Topology:
    """A fleet: a named tree of supervisors and agents. Constructing one validates it."""

    name: str
    """The fleet's name."""
    root: Supervisor
    """The root supervisor."""
    facts: FactPolicy = field(default_factory=FactPolicy)
    """How conflicting org-memory facts from different agents are settled."""
    untrusted_input: tuple[str, ...] = ()
    """Dotted paths of the episode's input that a third party wrote (``ticket.text``):
    untrusted content for argument provenance, though the operator passed them on."""
    approvals: Approvals = field(default_factory=Approvals)
    """Deadlines of approval requests, per tier."""
    policy: Policy = field(default_factory=Policy)
    """Rules on top of the roles' grants (``topologies/policy.py``)."""
    stages: tuple[CustomStage, ...] = ()
    """Stages added to every agent's gate, each after the stage it names
    (``topologies/stage.py``): a business-hours check, a second opinion."""

    def __post_init__(self) -> None:
        problems = problems_of(self)
        if problems:
            raise TopologyError(problems)

    @property
    def entry(self) -> str:
        """The agent that receives an episode's input."""
        return self.entry_of(self.root)

    def entry_of(self, supervisor: Supervisor) -> str:
        """The agent that receives a supervisor's work: its entry child, or that child's
        entry when the child is a supervisor."""
        return entry_agent(supervisor)

    def agents(self) -> dict[str, Agent]:
        """Every agent of the tree by name, depth first in declaration order (built once:
        a fleet may have thousands, and the runtime asks often)."""
        return self._tree()[0]

    def supervisors(self) -> dict[str, Supervisor]:
        """Every supervisor of the tree by name, the root first."""
        return self._tree()[1]

    def chain(self, name: str) -> list[Supervisor]:
        """The supervisors above an agent or a supervisor, its own first, the root last."""
        return self._tree()[2][name]

    def under(self, supervisor: str) -> frozenset[str]:
        """The agents in a supervisor's subtree."""
        return self._tree()[3][supervisor]

    def _tree(
        self,
    ) -> tuple[
        dict[str, Agent],
        dict[str, Supervisor],
        dict[str, list[Supervisor]],
        dict[str, frozenset[str]],
    ]:
        found = self.__dict__.get("_walked")
        if found is None:
            agents: dict[str, Agent] = {}
            supervisors: dict[str, Supervisor] = {}
            chains: dict[str, list[Supervisor]] = {}
            under: dict[str, set[str]] = {}

            def walk(s: Supervisor, above: list[Supervisor]) -> None:
                supervisors[s.name] = s
                under[s.name] = set()
                mine = [s, *above]
                for child in s.children:
                    chains[child.name] = mine
                    if isinstance(child, Supervisor):
                        walk(child, mine)
                    else:
                        agents[child.name] = child
                        for sup in mine:
                            under[sup.name].add(child.name)

            walk(self.root, [])
            chains[self.root.name] = []
            found = (agents, supervisors, chains, {k: frozenset(v) for k, v in under.items()})
            object.__setattr__(self, "_walked", found)
        return found

    def policy_hash(self) -> str:
        """The SHA-256 of everything that decides what the fleet may do: each agent's role
        and grants, rails, handoff targets, budget, and its tools' annotations (which set
        default tiers). Audit records carry it, so a decision names the policy version
        that made it; changing a prompt or a model does not change it."""
        document = [
            {
                "agent": a.name,
                "role": asdict(a.role),
                "rails": [{"kind": type(r).__name__, **asdict(r)} for r in a.rails],
                "handoffs": list(a.handoffs),
                "peers": list(a.peers),
                "workers": list(a.workers),
                "budget": asdict(a.budget),
                "price": asdict(a.price) if isinstance(a.price, Price) else None,
                "stuck": asdict(a.stuck),
                "tools": [
                    {
                        "name": t.name,
                        "read_only": t.read_only,
                        "destructive": t.destructive,
                        "idempotent": t.idempotent,
                        "open_world": t.open_world,
                    }
                    for t in a.all_tools().values()
                ],
            }
            for a in self.agents().values()
        ]
        text = json.dumps(
            {
                "agents": document,
                "bound": asdict(self.root.role) if self.root.role is not None else None,
                "supervisors": [
                    {
                        "name": s.name,
                        "parent": self.chain(s.name)[0].name if self.chain(s.name) else None,
                        "budget": asdict(s.budget),
                        "role": asdict(s.role) if s.role is not None else None,
                    }
                    for s in self.supervisors().values()
                ],
                "approvals": asdict(self.approvals),
                "policy": asdict(self.policy),
                # (Only when there are some: the hash of a fleet without any stays as it was.)
                **({"stages": [_stage_id(s) for s in self.stages]} if self.stages else {}),
            },
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def with_agents(self, change: Callable[[Agent], Agent]) -> Topology:
        """The same fleet with each agent replaced by ``change(agent)`` (its model swapped
        for a real one, or for recorded turns), at any depth of the tree."""

        def under(s: Supervisor) -> Supervisor:
            children = tuple(
                under(c) if isinstance(c, Supervisor) else change(c) for c in s.children
            )
            return dataclasses.replace(s, children=children)

        return dataclasses.replace(self, root=under(self.root))


def _stage_id(stage: CustomStage) -> dict[str, str]:
    """What names a topology's stage in the policy hash: its name, place and class."""
    kind = type(stage)
    return {
        "name": stage.name,
        "after": stage.after,
        "kind": f"{kind.__module__}.{kind.__qualname__}",
    }
