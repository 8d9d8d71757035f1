# Two commands do all the set-up on a fresh machine:
#   make run    the main job: `dvc repro` (simulate -> package -> train -> tune -> evaluate, baselines)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[casa,dev,pipeline]'
	touch $(STAMP)

# dvc.yaml's commands call `python`: the venv's, first on PATH
run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: setup
	$(PY) -m pytest -n 2 --dist loadfile --durations=10

bench: setup
	$(PY) benchmarks/bench_sim.py

clean:
	rm -rf build *.egg-info .pytest_cache  # DVC's outputs: dvc gc / dvc destroy
