# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

VENDOR := server/switchboard_server/static/vendor/socket.io.esm.min.js

.PHONY: run test lint format clean static soak bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# socket.io-client and the Socket.IO Admin UI from npm, copied into the server's
# static files (never committed, never loaded from a CDN).
$(VENDOR): web/package.json web/package-lock.json web/build_static.py
	cd web && npm ci --no-audit --no-fund --loglevel=error
	$(PYTHON) web/build_static.py

static: $(VENDOR)

# The official socket.io-client for tests/node/scenarios.mjs.
NODE_TESTS := tests/node/node_modules/.package-lock.json
$(NODE_TESTS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

# React, Vue, esbuild and TypeScript for tests/test_frontend.py.
FRONTEND_TESTS := tests/frontend/node_modules/.package-lock.json
$(FRONTEND_TESTS): tests/frontend/package.json tests/frontend/package-lock.json
	cd tests/frontend && npm ci --no-audit --no-fund --loglevel=error

$(VENV)/.installed: pyproject.toml $(VENDOR) | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENDOR) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## serve on 127.0.0.1:8001 with the SQLite store
	$(BIN)/switchboard serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check server client tests examples bench
	$(BIN)/ruff format --check server client tests examples bench
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix server client tests examples bench
	$(BIN)/ruff format server client tests examples bench

# The reference Node socket.io server and the load generator for `make bench`.
BENCH_DEPS := bench/node_ref/node_modules/.package-lock.json
$(BENCH_DEPS): bench/node_ref/package.json bench/node_ref/package-lock.json
	cd bench/node_ref && npm ci --no-audit --no-fund --loglevel=error

test: lint $(NODE_TESTS) $(FRONTEND_TESTS) $(BENCH_DEPS)  ## lint, then the whole suite against real servers
	$(BIN)/pytest $(PYTEST_ARGS)

soak: $(VENV)/.installed-test $(NODE_TESTS)  ## the heavier variants: thousands of fuzz cases
	SWITCHBOARD_FUZZ_EXAMPLES=2000 $(BIN)/pytest tests/test_fuzz.py tests/test_schemathesis.py \
		tests/test_crash.py tests/test_scale.py --timeout 3600 $(PYTEST_ARGS)

bench: $(VENV)/.installed $(BENCH_DEPS)  ## Switchboard beside Node socket.io, same run
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) web/node_modules tests/node/node_modules tests/frontend/node_modules bench/node_ref/node_modules $(dir $(VENDOR)) server/switchboard_server/static/admin-ui .pytest_cache .mypy_cache .ruff_cache build dist
