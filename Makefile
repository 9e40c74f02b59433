# Two commands for a newcomer: `make demo` and `make test`. Both work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test test-workflows check lint format bench install install-dev clean inspector mcp-servers bubblewrap browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An editable install leaves bytecode to the first run, which cannot write it where
# PYTHONDONTWRITEBYTECODE is set (so every command would compile aifr again, ~0.3 s);
# pip compiles a wheel install's bytecode, and so do we.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q src/aifr
	touch $@

$(DEVSTAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,embed,api,pydantic-ai,langchain,openai-agents]"
	$(BIN)/python -m compileall -q src/aifr
	touch $(STAMP) $@

install: $(STAMP)
install-dev: $(DEVSTAMP)

demo: $(STAMP)
	$(BIN)/aifr demo

check: $(DEVSTAMP)
	$(BIN)/ruff format --check src tests benchmarks plugins
	$(BIN)/ruff check src tests benchmarks plugins
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(DEVSTAMP)
	$(BIN)/ruff format src tests benchmarks plugins
	$(BIN)/ruff check --fix src tests benchmarks plugins

# The MCP Inspector CLI (a client nobody here wrote) for tests/e2e/mcp; installed once.
INSPECTOR := .tools/node_modules/.bin/mcp-inspector
$(INSPECTOR):
	npm install --prefix .tools --no-audit --no-fund --silent "@modelcontextprotocol/inspector@^2"

inspector: $(INSPECTOR)

# Issue 27: third-party MCP servers the gateway tests govern (mcp-server-git is in .[dev]).
MCP_SERVERS := .tools/node_modules/.bin/mcp-server-filesystem
$(MCP_SERVERS):
	npm install --prefix .tools --no-audit --no-fund --silent "@modelcontextprotocol/server-everything@^2026.8" "@modelcontextprotocol/server-filesystem@^2026.8"

mcp-servers: $(MCP_SERVERS)

# Issue 28: the sandbox tests run each backend; bubblewrap comes from Debian (root only).
bubblewrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }; } ; } || echo "bubblewrap is not installed and we are not root: its sandbox tests skip"

# Debian's Chromium for the console's browser tests (Playwright drives it; no download).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } ; } || echo "chromium is not installed and we are not root: the browser tests skip"

# One test process per core; work stealing keeps each busy to the end (with plain load
# balancing one sat idle for the last minutes while the other ran its share of the slow
# end-to-end tests). More processes than cores made timing-bound tests flaky.
test: check inspector mcp-servers bubblewrap browser
	$(BIN)/python -m pytest -n auto --dist worksteal --cov --cov-report=term $(PYTEST_ARGS)

# Issue 7: the workflow suite twice in a row, in parallel, to show it is not flaky.
WORKFLOW_TESTS := tests/unit/workflows tests/integration/workflows tests/crash tests/e2e/test_cli_workflows.py
test-workflows: $(DEVSTAMP)
	$(BIN)/python -m pytest -n auto -q -p no:cacheprovider $(WORKFLOW_TESTS)
	$(BIN)/python -m pytest -n auto -q -p no:cacheprovider $(WORKFLOW_TESTS)

bench: $(DEVSTAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .coverage*
