# One entry point for set-up, demo, tests, lint and benchmarks. Every target creates and fills
# .venv itself when missing, so a fresh machine needs nothing but Python 3.11 and this Makefile.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch is pinned in the same pip call so no dependency can pull a CUDA build.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e ".[dev,sim,bench]" "torch==2.13.0"
	$(PIP_INSTALL) --no-deps "scenedetect==0.7.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m wallwm.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/segmentation.py

clean:
	rm -rf $(VENV) demo bench-data .pytest_cache .mypy_cache .ruff_cache
