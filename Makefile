# Two commands set everything up: `make run` and `make test`. Each creates .venv and installs pinned packages
# (pyproject.toml for direct dependencies, constraints.txt for the whole tree) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: install run init test lint format bench sandbox sql clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed: make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

init: install
	$(BIN)/python -m jobs.cli init

# The collector runs beside the dashboard and stops with it: Ctrl+C, or SIGTERM to make or to the launcher
# (jobs/run.py says how).
run: init
	$(BIN)/python -m jobs.run --server.address=$(HOST) --server.port=$(PORT) --server.headless=true

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core jobs pages ui app.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Fake SolarEdge V2/V1 and Enphase servers on loopback (ports 8701-8703) for trying connections by hand.
sandbox: install
	$(BIN)/python -m tests.fakes.sandbox

bench: install
	$(BIN)/python -m bench

sql: init
	$(BIN)/python -m jobs.sql

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
