# streamcast developer commands. `make test` and `make demo` do all set-up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
UV     := $(BIN)/uv pip install --quiet --python $(BIN)/python

.PHONY: help install test test-fast check lint typecheck fmt demo kafka-up kafka-down kafka-status bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install streamcast with the train and dev extras

$(STAMP): pyproject.toml requirements-baselines.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streamcast needs Python 3.11+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	@# uv installs the same versions as pip, in parallel: 31 s instead of pip's 2 min 29 s
	@# on a cold cache here (make demo from a fresh clone stays under 3 minutes)
	$(BIN)/pip install --quiet uv==0.13.9
	$(UV) -e ".[train,dev]"
	@# statsforecast and fugue declare pandas<3 (the service pins 3.1.1): see the file
	$(UV) --no-deps -r requirements-baselines.txt
	@touch $(STAMP)

# Plugins are loaded by name (pyproject addopts), not by entry-point autoload: autoload
# also marks every module of the hypothesis package for assertion rewriting, and a
# hypothesis module imported late in the session is then re-parsed after hypothesis has
# moved the recursion limit, which on CPython 3.11.7 can end a green run with
# "SystemError: AST constructor recursion depth mismatch" (a CPython bug, fixed upstream).
PYTEST := PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/pytest

test: install  ## run the whole test suite (starts its own Kafka broker)
	$(PYTEST)

test-fast: install  ## unit tests only (no broker, no training)
	$(PYTEST) tests/unit

lint: install  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install  ## mypy --strict
	$(BIN)/mypy

check: lint typecheck test  ## lint, types and tests

fmt: install  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install  ## train, start a broker, serve, replay and show forecasts end to end
	@bash scripts/demo

kafka-up:  ## start the local broker on 127.0.0.1:9092 (KAFKA_LOCAL_PORT to change)
	@scripts/kafka-local start

kafka-down:  ## stop the local broker
	@scripts/kafka-local stop

kafka-status:
	@scripts/kafka-local status

bench: install  ## run the benchmarks under bench/
	@bash bench/run

clean:  ## remove the venv, caches and broker data (keeps nothing)
	-scripts/kafka-local stop
	rm -rf $(VENV) .kafka .mypy_cache .ruff_cache .pytest_cache .hypothesis
