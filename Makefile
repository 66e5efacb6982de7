# `make demo` and `make test` are the README's two commands; both set the venv up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.talkfactory-installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	# torch first and pinned: an unpinned resolve pulls gigabytes of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@

demo: setup
	$(BIN)/talkfactory demo

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow and not servers"

lint: setup
	$(BIN)/ruff check talkfactory tests bench migrations
	$(BIN)/ruff format --check talkfactory tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python bench/bench_render.py

clean:
	rm -rf $(VENV) .talkfactory demo-out .pytest_cache .mypy_cache .ruff_cache
