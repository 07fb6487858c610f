# Oculus: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced
# What the web tests and `make run` need besides Python (Debian package names).
SYSTEM_PACKAGES := nginx chromium chromium-driver fonts-dejavu-core

.PHONY: install compile run run-live test lint sandbox migrate bench bench-resources stop-db system-deps

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	@$(BIN)/uv sync --frozen --quiet --compile-bytecode --python $(BIN)/python
	@touch $(STAMP)

## install: the virtualenv and packages from uv.lock (run and test do it too)
install: $(STAMP)

## system-deps: nginx, Chromium and chromedriver from apt, only when one is missing (root)
system-deps:
	@PATH="$$PATH:/usr/sbin:/usr/local/sbin"; missing=; \
	for c in nginx chromium chromedriver; do \
		command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "missing:$$missing; as root: apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; \
		fi; \
		echo "installing$$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	fi

## run: the whole system locally (embedded Postgres, migrations, sandbox exchange, jobs)
run: $(STAMP) system-deps compile
	@$(BIN)/python -m run_local

## run-live: the same against the configured upstreams (real Polymarket), no sandbox
run-live: $(STAMP) system-deps compile
	@$(BIN)/python -m run_local --live

# Bytecode for our own modules: every scheduled job is a fresh process (cold start).
compile: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 common functions api site_builder sandbox run_local.py >/dev/null

## test: lint, type-check, import contracts and the whole test suite (what .ci/run calls)
test: $(STAMP) system-deps
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-cache
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports --no-cache

sandbox: $(STAMP)
	@$(BIN)/python -m sandbox serve

migrate: $(STAMP)
	@$(BIN)/python -m common.store.migrate

## stop-db: stop the embedded Postgres (make run and make test leave it running to reuse)
stop-db: $(STAMP)
	@$(BIN)/python -m common.store.db stop

bench: $(STAMP)
	@$(BIN)/python -m benchmarks.sandbox_throughput
	@$(BIN)/python -m benchmarks.copy_engine
	@$(BIN)/python -m benchmarks.cold_start

## bench-resources: RSS and CPU of every process over a 10-minute demo run
bench-resources: $(STAMP) system-deps compile
	@$(BIN)/python -m benchmarks.resources
