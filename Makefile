# Better-Assistant backend: `make dev` runs everything locally, `make test` runs the suite.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PORT ?= 8080
FUNCTION ?= prompts

.PHONY: help uv sync dev run test lint format bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

uv: ## Install uv when the machine has none
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

sync: uv ## Install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

dev: sync ## Run every function behind one gateway on http://127.0.0.1:$(PORT), embedded MongoDB
	PORT=$(PORT) $(UV) run --frozen python -m devtools.dev

run: sync ## Run one function alone under functions-framework: make run FUNCTION=prompts
	$(UV) run --frozen functions-framework --source functions/$(FUNCTION)/main.py --target handle --port $(PORT)

test: sync ## Run the test suite (starts its own SecantusDB; TEST_MONGODB_URI uses a real MongoDB)
	$(UV) run --frozen pytest

lint: sync ## Check formatting and lint with ruff
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

format: sync ## Format and fix what ruff can
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: sync ## Run the benchmarks and print their figures
	$(UV) run --frozen python -m bench.prompt_fetch
