# Better-Assistant backend: `make dev` runs everything locally, `make test` runs the suite.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PORT ?= 8080
FUNCTION ?= prompts

.PHONY: help uv sync dev run db test lint format bench

# The variables a description after `##` may name, as `$(PORT)`: help shows their values.
HELP_VARIABLES := PORT FUNCTION

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}' \
		| sed $(foreach name,$(HELP_VARIABLES),-e 's|$$($(name))|$($(name))|g')

uv: ## Install uv when the machine has none
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

sync: uv ## Install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

dev: sync ## Run every function behind one gateway on http://127.0.0.1:$(PORT), embedded MongoDB
	PORT=$(PORT) $(UV) run --frozen python -m devtools.dev

run: sync ## Run one function alone, as its image does, on http://127.0.0.1:$(PORT): make run FUNCTION=$(FUNCTION)
	PORT=$(PORT) $(UV) run --frozen python -m devtools.run $(FUNCTION)

db: sync ## Run only the embedded MongoDB (data in .data/mongo) and print its MONGODB_URI, until Ctrl-C
	$(UV) run --frozen python -m devtools.db

test: sync ## Run the test suite (starts its own SecantusDB; TEST_MONGODB_URI uses a real MongoDB)
	$(UV) run --frozen pytest

lint: sync ## Check formatting and lint with ruff
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

format: sync ## Format and fix what ruff can
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: sync ## Run the benchmarks and print their figures (a few minutes; Linux, 2+ cores)
	$(UV) run --frozen python -m bench.prompt_fetch
	$(UV) run --frozen python -m bench.cold_start
	$(UV) run --frozen python -m bench.chat_overhead
	$(UV) run --frozen python -m bench.openai_overhead
	$(UV) run --frozen python -m bench.evaluation
	$(UV) run --frozen python -m bench.database_outage

# Deployment: one image for every function; see README "Deploy".
IMAGE_NAME ?= better-assistant
IMAGE_TAG ?= latest
IMAGE := $(IMAGE_NAME):$(IMAGE_TAG)

.PHONY: build push manifests openapi deploy-openfaas deploy-knative

build: ## Build the image (Docker): make build IMAGE_NAME=registry/better-assistant IMAGE_TAG=1.0
	docker build -t $(IMAGE) .

push: build ## Push the image to its registry
	docker push $(IMAGE)

manifests: sync ## Render stack.yml and knative/ from the table in devtools/manifests.py
	$(UV) run --frozen python -m devtools.manifests manifests

openapi: sync ## Write openapi.json: the OpenAPI 3.1 document of every function
	$(UV) run --frozen python -m devtools.manifests openapi

deploy-openfaas: push ## faas-cli up: every function of stack.yml from the image (OPENFAAS_URL)
	IMAGE=$(IMAGE) faas-cli up -f stack.yml --skip-push

deploy-knative: push ## kubectl apply -k knative/, with the image (needs knative/secrets.env)
	@test -f knative/secrets.env || { echo "knative/secrets.env is missing: copy knative/secrets.env.example and fill it in"; exit 1; }
	@overlay=$$(mktemp -d) && cp -R knative/. $$overlay/ \
		&& printf 'images:\n- name: better-assistant\n  newName: %s\n  newTag: "%s"\n' '$(IMAGE_NAME)' '$(IMAGE_TAG)' >> $$overlay/kustomization.yaml \
		&& kubectl apply -k $$overlay; status=$$?; rm -rf $$overlay; exit $$status
