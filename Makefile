# Audiary: `make demo` and `make test` set up everything they need on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv up down demo test test-unit test-integration test-e2e lint typecheck check bench lock clean

help:
	@echo "make demo   start the native stack, transcribe a sample, print it, stop"
	@echo "make test   lint, type-check and run the whole suite"
	@echo "make up / make down   start / stop the native local stack in the background"
	@echo "make bench  run the benchmarks, results in bench/results/"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

# Regenerate the pinned dependency set after changing pyproject.toml.
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra transcriber --extra models --extra llm --extra dev \
		--python-version 3.11 --quiet -o requirements.lock

up: venv
	$(BIN)/audiary stack up

down: venv
	$(BIN)/audiary stack down

# The demo splits its ~90 s sample into ~30 s chunks so that fan-out and fan-in show.
demo: venv
	AUDIARY_CHUNK_TARGET_S=30 AUDIARY_CHUNK_SEARCH_S=8 AUDIARY_STATE_DIR=.audiary/demo \
	AUDIARY_PUBSUB_PORT=8185 AUDIARY_FIRESTORE_PORT=8186 AUDIARY_GCS_PORT=9123 \
	AUDIARY_INGEST_PORT=8191 AUDIARY_TRANSCRIBER_PORT=8192 \
		$(BIN)/audiary demo

lint: venv
	$(BIN)/ruff check src functions containers tests bench

typecheck: venv
	$(BIN)/mypy

check: lint typecheck

test: check
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf .audiary .pytest_cache .mypy_cache .ruff_cache
