# The front door.  `make train` and `make test` each do every set-up step they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= mujoco,examples,bench,ray,atari,dev,docs
# Arguments for `make train`, e.g. make train ARGS="Hopper-v5 --steps 1000000"
ARGS   ?=
# Parallel test workers (pytest-xdist); 0 runs in one process.
JOBS   ?= 2
# Installed with --no-deps when EXTRAS has bench (see setup); pinned, as their
# dependencies are listed by hand in the bench extra.
NODEPS_PKGS := curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 nngeometry==0.4

.PHONY: setup train test test-slow test-all lint type docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# The CPU build of torch first, pinned: a loose spec would pull a multi-GB CUDA build.
	# constraints.txt holds torch at that version for every later install.
	$(BIN)/python -m pip install -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -c constraints.txt -e ".[$(EXTRAS)]"
	# MinAtar needs only numpy; its metadata would pull pandas, scipy and seaborn.
	$(BIN)/python -m pip install -c constraints.txt --no-deps "minatar==1.0.15"
	# Curvature libraries for bench/fvp.py, without their dependencies: backpack and
	# nngeometry require torchvision, whose wheel does not load against the CPU torch.
	# None of them imports it (only backpack.utils.examples does); their small
	# dependencies are in the bench extra.
	$(if $(findstring bench,$(EXTRAS)),$(BIN)/python -m pip install -c constraints.txt --no-deps $(NODEPS_PKGS))
	$(BIN)/python -c "import sys, torch; v = torch.__version__; print('torch', v); \
	  sys.exit(None if v == '2.13.0+cpu' else f'set-up changed torch to {v}, not 2.13.0+cpu')"
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

docs: setup
	$(BIN)/mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python bench/fvp.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
