"""tether.agents: one agent — its model, its tools, and its loop."""

from .builtins import DELEGATE, HANDOFF, handoff
from .fanout import FanOut
from .loop import ActionGate, ActionResult, AgentLoop, AgentOutcome
from .model import Message, Model, ModelRequest, ModelTurn, Price, ToolCall, ToolSpec, Usage
from .openai_compat import OpenAIModel
from .scripted import ScriptedModel, call, calls, flaky, say
from .tools import Tool, ToolContext, tool

__all__ = [
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
]
