# Self-installing targets: `make train` and `make test` work on a fresh machine with Python 3.11 + pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: setup train test test-all lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0   # first, pinned: a range lets pip pick a newer CUDA build (GBs)
	$(BIN)/python -m pip install -q -e ".[dev,sweep,safetensors]"   # every extra: no test skips for a missing one
	touch $@

train: setup  ## EDSR-baseline x2 with PSPL on the sample set; pass overrides with ARGS="loss=l1 ..."
	$(BIN)/pspl-train $(ARGS)

test: setup  ## the default (fast) test suite
	$(BIN)/python -m pytest -q $(ARGS)

test-all: setup  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check .
