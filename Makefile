# Self-installing targets: `make train` and `make test` work on a fresh machine with Python 3.10+ and pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
# Test processes (pytest-xdist): one per core on the 2-core CI machines; each test file stays in one process
# (its module fixtures are built once). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

.PHONY: setup train test test-all test-oldest lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/torch.txt   # first: the pinned torch stack (one place)
	$(BIN)/python -m pip install -q -e ".[dev,sweep,safetensors,zoo,onnx,stream]"   # every extra: no test skips for a missing one
	touch $@

train: setup  ## EDSR-baseline x2 with PSPL on the sample set; pass overrides with ARGS="loss=l1 ..."
	$(BIN)/pspl-train $(ARGS)

test: setup  ## the default (fast) test suite
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) $(ARGS)

test-all: setup  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_PARALLEL) $(ARGS)

OLDEST ?= .venv-oldest
$(OLDEST)/.installed: pyproject.toml Makefile requirements/oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q --upgrade pip
	$(OLDEST)/bin/python -m pip install -q -r requirements/oldest.txt
	$(OLDEST)/bin/python -m pip install -q -c requirements/oldest.txt -e ".[dev,sweep,safetensors,onnx,stream]"
	touch $@

test-oldest: $(OLDEST)/.installed  ## the default suite on the lowest declared versions (requirements/oldest.txt)
	$(OLDEST)/bin/python -m pytest -q $(PYTEST_PARALLEL) $(ARGS)

lint: setup
	$(BIN)/ruff check .
