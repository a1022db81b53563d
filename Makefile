# Everything a fresh machine with Python 3.11+ needs: the first target run
# creates .venv and installs Leash into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck fault-heavy limits-heavy bench bench-quick clean

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

limits-heavy: $(STAMP)  ## 10 000 idle connections on one broker: memory per connection, the limit
	LEASH_IDLE_CONNECTIONS=10000 $(PY) -m pytest -q -s -p no:randomly \
		tests/integration/test_limits_load.py -k idle_connections

lint: $(STAMP)
	$(VENV)/bin/ruff check protocol broker client tests bench
	$(VENV)/bin/ruff format --check protocol broker client tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) leash-data .pytest_cache .mypy_cache .ruff_cache
