# Two commands on a fresh machine: `make reproduce` and `make test`. Each builds .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS ?= 3
OUT ?= results

.PHONY: install test test-all reproduce lint lock wheel-check docs clean

install: $(STAMP)

# the exact versions of requirements.lock (pyproject.toml keeps loose ranges for library users)
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU build that lies on this disk; a range would pull a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# rewrite requirements.lock from .venv (after a deliberate upgrade there); commit it with the change
lock: $(STAMP)
	{ sed -n '/^#/p' requirements.lock; $(BIN)/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# the fast suite; test-all adds the tests marked slow (what CI runs). One torch thread per process:
# the tests are many small tensors, where a second thread only spins (and slowed the suite 2-10x).
# Instead, one pytest worker per core (pytest-xdist); --dist worksteal: an idle worker takes tests
# from the busy one (idle 2-core machine: 91 s against 113 s with --dist loadscope, which keeps each
# module on one worker and so builds a module-scoped fixture once, but leaves one worker idle at the end).
# TEST_WORKERS=0 runs in this process alone.
TEST_WORKERS ?= auto
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist worksteal

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

reproduce: $(STAMP)
	$(BIN)/localstdp reproduce --seeds $(SEEDS) --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts examples docs

# build the wheel, install it into a fresh venv and run train / reproduce by name from an empty directory
wheel-check: $(STAMP)
	PYTHON=$(PYTHON) BUILD_PY=$(BIN)/python scripts/wheel-check.sh

# the docs site into site/ (mkdocs.yml); --strict: a broken link, anchor or reference fails the build. The config,
# CLI and API reference pages are generated from the code on every build (docs/gen_ref.py)
docs: $(STAMP)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache site
