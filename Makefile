# The README's commands. Each target creates (or reuses) the virtual environment in .venv.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Nothing reaches for the network at run time.
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore::FutureWarning:pytorch_lightning.utilities._pytree

.PHONY: venv demo test test-all lint format bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	touch $(STAMP)

venv: $(STAMP)

## Train CE and ACLS (and their peers) on the embedded digits data; print the comparison table.
demo: $(STAMP)
	$(PY) -m lightning_calib.demo

## The default test suite (slow tests deselected).
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/train_loop.py
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/datamodules.py
	$(PY) benchmarks/segmentation.py

clean:
	rm -rf $(VENV) runs results .pytest_cache
