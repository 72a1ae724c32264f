# The two commands: `make demo` (set up + main job end to end) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: install demo test test-fast lint ui dashboard bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# --env-manager local runs the entry points' `mlflow-numerai` from PATH: put the venv's first.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run projects -e main --env-manager local

# `make test` runs everything (CI), one test file per worker process (pytest-xdist: 7 min instead
# of 12 on 2 cores); `make test-fast` (or plain `pytest`) skips the e2e marker, in one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -m "e2e or not e2e" -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest

# ruff (pyproject.toml [tool.ruff]) and the layers contract (import-linter, docs/ARCHITECTURE.md).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)

dashboard: install
	$(BIN)/mlflow-numerai dashboard

clean:
	rm -rf $(VENV) mlruns mlflow.db .pytest_cache
