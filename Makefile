# Two commands do all the set-up on a fresh machine:
#   make run    simulate the small default set (later: dvc repro)
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
	$(PY) -m pip install --quiet -e '.[casa,dev]'
	touch $(STAMP)

run: setup
	$(PY) -m sim generate --config experiments/default.yaml --out data/sim --n 20

test: setup
	$(PY) -m pytest -n 2 --durations=10

bench: setup
	$(PY) benchmarks/bench_sim.py

clean:
	rm -rf data build *.egg-info .pytest_cache
