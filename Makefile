# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch first: an unpinned torch resolves to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: env demo test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e '.[dev]'
	touch $@

env: $(VENV)/.installed

# The main job on the embedded default: stages 1 -> 2 -> 3, then the evaluation table.
demo: env
	$(PY) train.py
	$(PY) train.py stage=2
	$(PY) train.py stage=3
	$(PY) eval.py

# Everything (CI): unit, parity and end-to-end lanes.
test: env
	$(PY) -m pytest -q

# The unit lane without the runs that train: about a minute on two cores.
test-fast: env
	$(PY) -m pytest -q tests/unit -m "not slow"

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs multirun .pytest_cache
