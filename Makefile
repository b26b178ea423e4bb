# Audiary: `make demo` and `make test` set up everything they need on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-train.txt pyproject.toml | sha1sum | cut -c1-12)
# Label Studio, the review desk, pins its own Django stack: it gets a virtual environment of
# its own (the tests start it; the compose profile runs the same version's image).
LABEL_STUDIO_VERSION := 1.23.2
LS_VENV := .venv-label-studio
LS_STAMP := $(LS_VENV)/.installed-$(LABEL_STUDIO_VERSION)
PYTEST_ARGS ?=

# Google Cloud (Pulumi, infra/): `make preview|up|down STACK=dev`. Without STACK, `make up` and
# `make down` start and stop the native local stack.
STACK ?=
PULUMI = pulumi --cwd infra --stack $(or $(STACK),dev)
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)

.PHONY: help prerequisites venv label-studio up down demo demo-learning test test-unit test-integration test-e2e test-infra lint \
	typecheck check bench lock clean preview image

help:
	@echo "make demo   start the native stack, transcribe a sample, print it and its note, stop"
	@echo "make demo-learning   the learning loop: corrections, dataset, candidates, promotion"
	@echo "make test   lint, type-check and run the whole suite"
	@echo "make up / make down   start / stop the native local stack in the background"
	@echo "make preview|up|down STACK=dev   Google Cloud via Pulumi (infra/)"
	@echo "make image STACK=dev   build and push the transcriber, set audiary:transcriberImage"
	@echo "make bench  run the benchmarks, results in bench/results/"

# System packages first: say what is missing and how to install it before anything runs.
prerequisites:
	@scripts/prerequisites.sh test

venv: $(STAMP)

label-studio: $(LS_STAMP)

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	@rm -f $(LS_VENV)/.installed-* && touch $@

$(STAMP): requirements.lock requirements-train.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet -r requirements-train.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

# Regenerate the pinned dependency set after changing pyproject.toml.
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra transcriber --extra models --extra llm --extra gcp --extra review --extra launch --extra learning --extra dev \
		--python-version 3.11 --quiet -o requirements.lock

up: venv
ifeq ($(STACK),)
	$(BIN)/audiary stack up
else
	$(PULUMI) up
endif

down: venv
ifeq ($(STACK),)
	$(BIN)/audiary stack down
else
	$(PULUMI) destroy
endif

preview: venv
	$(PULUMI) preview --diff

# Build the transcriber with Cloud Build into the stack's registry and point the stack at it.
image: venv
	@repo="$$($(PULUMI) stack output imageRepository)" \
	  || { echo "run 'make up STACK=$(or $(STACK),dev)' once first: it creates the registry"; exit 1; }; \
	image="$$repo/transcriber:$(IMAGE_TAG)"; \
	gcloud builds submit --project "$$($(PULUMI) config get gcp:project)" \
	  --config infra/cloudbuild.yaml --substitutions _IMAGE="$$image" . && \
	$(PULUMI) config set audiary:transcriberImage "$$image"

# The demo splits its ~90 s sample into ~30 s chunks so that fan-out and fan-in show.
demo:
	@scripts/prerequisites.sh demo
	@$(MAKE) --no-print-directory venv
	AUDIARY_CHUNK_TARGET_S=30 AUDIARY_CHUNK_SEARCH_S=8 AUDIARY_STATE_DIR=.audiary/demo \
	AUDIARY_PUBSUB_PORT=8185 AUDIARY_FIRESTORE_PORT=8186 AUDIARY_GCS_PORT=9123 \
	AUDIARY_INGEST_PORT=8191 AUDIARY_TRANSCRIBER_PORT=8192 AUDIARY_SUMMARIZE_PORT=8193 \
	AUDIARY_API_PORT=8194 AUDIARY_WEBHOOKS_PORT=8195 AUDIARY_INGEST_METRICS_PORT=9291 \
	AUDIARY_SUMMARIZE_METRICS_PORT=9293 AUDIARY_WEBHOOKS_METRICS_PORT=9295 \
	AUDIARY_WATCHER_METRICS_PORT=9296 AUDIARY_DEADLETTERS_PORT=8196 \
	AUDIARY_DEADLETTERS_METRICS_PORT=9297 AUDIARY_SWEEPER_PORT=8197 \
	AUDIARY_SWEEPER_METRICS_PORT=9298 AUDIARY_LEARNING_PORT=8199 \
	AUDIARY_LEARNING_METRICS_PORT=9300 \
		$(BIN)/audiary demo $(DEMO_FLAGS)

# The learning loop on a small set (see the README's "The loop" section): corrections in,
# a dataset, candidates, their WER and the promotion decisions. About 10 minutes on 2 cores.
SPEECH_DIR ?= ../shared/speech
demo-learning:
	@scripts/prerequisites.sh demo-learning
	@$(MAKE) --no-print-directory venv
	AUDIARY_MODEL=tiny.en AUDIARY_STATE_DIR=.audiary/demo-learning AUDIARY_CHUNK_TARGET_S=30 \
	AUDIARY_PUBSUB_PORT=8385 AUDIARY_FIRESTORE_PORT=8386 AUDIARY_GCS_PORT=9323 \
	AUDIARY_INGEST_PORT=8391 AUDIARY_TRANSCRIBER_PORT=8392 AUDIARY_SUMMARIZE_PORT=8393 \
	AUDIARY_API_PORT=8394 AUDIARY_WEBHOOKS_PORT=8395 AUDIARY_DEADLETTERS_PORT=8396 \
	AUDIARY_SWEEPER_PORT=8397 AUDIARY_REVIEW_PORT=8398 AUDIARY_LEARNING_PORT=8399 \
	AUDIARY_INGEST_METRICS_PORT=9491 AUDIARY_SUMMARIZE_METRICS_PORT=9493 \
	AUDIARY_WEBHOOKS_METRICS_PORT=9495 AUDIARY_WATCHER_METRICS_PORT=9496 \
	AUDIARY_DEADLETTERS_METRICS_PORT=9497 AUDIARY_SWEEPER_METRICS_PORT=9498 \
	AUDIARY_REVIEW_METRICS_PORT=9499 AUDIARY_LEARNING_METRICS_PORT=9500 \
	AUDIARY_API_RATE_PER_S=50 AUDIARY_API_BURST=100 \
	AUDIARY_DATASET_SPLITS='[0.6,0.0,0.4]' AUDIARY_DATASET_READY_HOURS=0.01 \
	AUDIARY_TRAIN_STEPS=20 AUDIARY_TRAIN_BATCH_SIZE=4 AUDIARY_TRAIN_GRAD_ACCUM=1 \
	AUDIARY_TRAIN_LEARNING_RATE=1e-4 AUDIARY_TRAIN_WARMUP_STEPS=2 AUDIARY_PROMOTE_MIN_WORDS=20 \
	env $$(test -f $(SPEECH_DIR)/manifest.jsonl && \
	   echo AUDIARY_PROMOTE_GUARD=$$(realpath $(SPEECH_DIR)/manifest.jsonl)) \
		$(BIN)/audiary demo-learning

lint: venv
	$(BIN)/ruff check src functions containers tests bench infra emulators
	$(BIN)/lint-imports

# The entry points are checked one by one: every function's module is named `main`.
typecheck: venv
	$(BIN)/mypy
	@for entry in functions/*/main.py containers/transcriber/main.py; do \
	  echo "$(BIN)/mypy $$entry"; $(BIN)/mypy --strict "$$entry" || exit 1; done

check: lint typecheck

test: prerequisites
	@$(MAKE) --no-print-directory check label-studio
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test-infra: venv
	$(BIN)/pytest tests/infra $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf .audiary .pytest_cache .mypy_cache .ruff_cache
