# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## serve on 127.0.0.1:8001 with the SQLite store
	$(BIN)/switchboard serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check server client tests
	$(BIN)/ruff format --check server client tests
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix server client tests
	$(BIN)/ruff format server client tests

test: lint  ## lint, then the whole suite against real servers
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
