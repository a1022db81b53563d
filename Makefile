# Everything a fresh machine with Python 3.11+ needs: the first target run
# creates .venv and installs Leash into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck fault-heavy bench bench-quick clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)  ## run a broker on 127.0.0.1:7420 with its data in ./leash-data
	$(VENV)/bin/leash serve

test: $(STAMP)  ## the whole test suite (under 10 minutes on 2 cores)
	$(PY) -m pytest -q

fault-heavy: $(STAMP)  ## kill -9 under load, 200 cycles per fsync policy (about 8 minutes)
	LEASH_KILL9_CYCLES=200 $(PY) -m pytest -q -s --timeout 1800 tests/fault/test_kill9.py

lint: $(STAMP)
	$(VENV)/bin/ruff check protocol broker client tests bench
	$(VENV)/bin/ruff format --check protocol broker client tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) leash-data .pytest_cache .mypy_cache .ruff_cache
