# Two commands do all the set-up on a fresh machine:
#   make run    the main job: `dvc repro` (simulate -> package -> train -> tune -> evaluate, baselines)
#   make test   run the test suite
#   make eval-casa   after `make run`: the held-out CASA cubes (eval_casa/dvc.yaml), scored beside SoFiA-2
# Both build .venv/ from requirements/lock.txt (exact versions, hashed): every machine, CI
# included, gets the same environment. `make lock` re-resolves the lock from pyproject.toml.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
LOCK_ARGS := pyproject.toml requirements/build.in --extra casa --extra dev --extra pipeline \
	--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: run test setup lock bench clean eval-casa

setup: $(STAMP)

# A changed lock rebuilds the venv from nothing: no package outside the lock survives in it.
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

lock: setup
	$(VENV)/bin/uv pip compile $(LOCK_ARGS) -o $(LOCK)

# dvc.yaml's commands call `python`: the venv's, first on PATH
run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# CASA makes 8 paper-size cubes (~1 h on 2 cores), then models/ and SoFiA-2 score them; SoFiA-2
# 2.5.1 is built once where eval_casa/params.yaml's `sofia` says, from ../shared/baselines
SOFIA := $(shell sed -n 's/^sofia: *\([^ #]*\).*/\1/p' eval_casa/params.yaml)
eval-casa: setup
	test -x $(SOFIA) || ../shared/baselines/build_sofia2.sh $(dir $(SOFIA))
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro eval_casa/dvc.yaml

test: setup
	$(PY) -m pytest -n 2 --dist loadfile --durations=10

bench: setup
	$(PY) benchmarks/bench_sim.py

clean:
	rm -rf build *.egg-info .pytest_cache  # DVC's outputs: dvc gc / dvc destroy
