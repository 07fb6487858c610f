# Oculus: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced

.PHONY: run test lint sandbox migrate bench stop-db

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	@$(BIN)/uv sync --frozen --quiet --python $(BIN)/python
	@touch $(STAMP)

## run: the whole system locally (embedded Postgres, migrations, sandbox exchange, jobs)
run: $(STAMP)
	@$(BIN)/python -m common.run_local

## test: lint, type-check and the whole test suite (what .ci/run calls)
test: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

sandbox: $(STAMP)
	@$(BIN)/python -m sandbox serve

migrate: $(STAMP)
	@$(BIN)/python -m common.migrate

## stop-db: stop the embedded Postgres (make run and make test leave it running to reuse)
stop-db: $(STAMP)
	@$(BIN)/python -m common.db stop

bench: $(STAMP)
	@$(BIN)/python -m benchmarks.sandbox_throughput
	@$(BIN)/python -m benchmarks.copy_engine
