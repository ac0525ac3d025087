# fhirsync: `make demo` runs a demo network, `make test` runs the whole suite. Both build .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres lint format bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fhirsync demo

# The whole suite on SQLite, then the database-facing suites again on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: $(STAMP)
	$(BIN)/pytest -q

test-postgres: $(STAMP)
	FHIRSYNC_TEST_DB=postgresql $(BIN)/pytest -q -m postgres

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
