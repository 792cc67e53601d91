# AdvancedLearning for freqtrade. Two commands on a fresh machine:
#   make demo   - create the environment, start the local exchange, backtest AdvancedLearning
#   make test   - run the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Real Binance candles when they sit beside the repo (tests and benchmarks read them from there).
SHARED_DATA := $(abspath ../shared/data/binance)
export ADVL_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/*.feather),$(SHARED_DATA),)
# torch first, from the pinned CPU build, so nothing pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-fast lint bench soak clean-state

$(BIN)/ftlearn: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(BIN)/ftlearn

demo: venv
	$(BIN)/ftlearn demo

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check learning strategies freqai_models tests benchmarks

bench: venv
	$(BIN)/ftlearn bench --evidence

# An hour of dry-run on the local exchange with three SIGKILL restarts (not part of CI).
soak: venv
	$(BIN)/python benchmarks/soak.py --minutes 60 --kills 3

clean-state:
	rm -rf user_data/learning user_data/backtest_results user_data/models
