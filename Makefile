# The README's two set-up commands are `make demo` and `make test`; both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := runtime agents memory topologies

.PHONY: demo test lint typecheck pytest bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing tether and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@( $(BIN)/python -m pip install --upgrade pip && \
	   $(BIN)/python -m pip install -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# mypy does not follow setuptools' editable import hook; a symlink tree lets it see tether.*.
.typing/tether: 
	mkdir -p .typing/tether
	for p in $(PACKAGES); do ln -sfn ../../$$p .typing/tether/$$p; done

demo: $(STAMP)
	$(BIN)/tether demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) .typing/tether
	MYPYPATH=.typing $(BIN)/mypy -p tether

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

# 100 kill -9 trials (the test suite runs 20).
chaos: $(STAMP)
	TETHER_CHAOS_TRIALS=100 $(BIN)/python -m pytest -q tests/test_chaos.py

clean:
	rm -rf $(VENV) .typing .mypy_cache .ruff_cache .pytest_cache
