# The front door.  `make train` and `make test` each do every set-up step they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= mujoco,examples,bench,ray,atari,dev
# Arguments for `make train`, e.g. make train ARGS="Hopper-v5 --steps 1000000"
ARGS   ?=
# Parallel test workers (pytest-xdist); 0 runs in one process.
JOBS   ?= 2

.PHONY: setup train test test-slow test-all lint type bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# The CPU build of torch first, pinned: a loose spec would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install "torch==2.13.0"
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	# MinAtar needs only numpy; its metadata would pull pandas, scipy and seaborn.
	$(BIN)/python -m pip install --no-deps "minatar==1.0.15"
	touch $@

train: setup
	$(BIN)/natgrad train $(ARGS)

test: setup
	$(BIN)/python -m pytest -m "not slow" -n $(JOBS)

test-slow: setup
	$(BIN)/python -m pytest -m slow -n $(JOBS) || [ $$? -eq 5 ]  # 5: no slow test collected

test-all: test test-slow

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

type: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/fvp.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
