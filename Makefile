# keel: every check is one command. `make help` lists them.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# llama.cpp built for any x86-64 with AVX2 (a native build crashed here in the AMX kernels)
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF

.PHONY: help setup test test-fast lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.setup-done ## create .venv with keel and everything the embedded default needs

$(VENV)/.setup-done: pyproject.toml Makefile scripts/setup.sh
	PYTHON=$(PYTHON) LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" bash scripts/setup.sh
	touch $@

test: setup ## run the whole test suite
	$(BIN)/pytest

test-fast: setup ## the suite without the real embedded model
	$(BIN)/pytest -m "not local_model"

lint: setup ## ruff
	$(BIN)/ruff check src tests bench

bench: setup ## the benchmarks; figures go to bench/RESULTS.md
	$(BIN)/python bench/run_all.py

clean: ## remove the virtualenv and caches (pip's wheel cache is kept)
	rm -rf $(VENV) .pytest_cache
