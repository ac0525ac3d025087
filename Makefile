# fhirsync: `make demo` runs a demo network, `make test` runs the whole suite. Both build .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres lint format bench clean venv

HTMX_VERSION := 2.0.4
HTMX := src/fhirsync/ui/static/htmx.min.js

venv: $(STAMP) $(HTMX)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# htmx for the admin UI's live parts: fetched from npm, never committed (the pages work without it).
$(HTMX):
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent htmx.org@$(HTMX_VERSION) >/dev/null \
	  && tar xzf htmx.org-$(HTMX_VERSION).tgz package/dist/htmx.min.js \
	  && cp package/dist/htmx.min.js $(CURDIR)/$(HTMX) && rm -rf $$tmp

demo: $(STAMP) $(HTMX)
	$(BIN)/fhirsync demo

# The whole suite on SQLite, then the database-facing suites again on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: $(STAMP) $(HTMX)
	$(BIN)/pytest -q -n auto --dist worksteal

test-postgres: $(STAMP) $(HTMX)
	FHIRSYNC_TEST_DB=postgresql $(BIN)/pytest -q -n auto --dist worksteal -m postgres

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts bench/out
