# Everything a fresh machine with Python 3.11+ needs: the first target run
# creates .venv and installs Leash into it.
PYTHON ?= python3
ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
NODE_STAMP := tests/faktory/node_modules/.installed

.PHONY: run test test-fast check lint typecheck fault-heavy sim-heavy limits-heavy memory-heavy recovery-heavy bench bench-quick screenshot clean faktory-clients

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,web]'
	@touch $(STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,web,bench]'
	@touch $(BENCH_STAMP)

run: $(STAMP)  ## run a broker on 127.0.0.1:7420 with its data in ./leash-data (flags: ARGS="--port 7500")
	$(VENV)/bin/leash serve $(ARGS)

test: $(STAMP) faktory-clients  ## the whole test suite, four at a time (about 5 minutes on 2 cores)
	$(PY) -m pytest -q -n 4

test-fast: $(STAMP)  ## unit and property tests, a quarter of the random examples, one seed a walk (about 70 s): for every edit
	HYPOTHESIS_PROFILE=fast $(PY) -m pytest -q -n 4 tests/unit tests/property

# Faktory's Node client for the Faktory-protocol tests (tests/faktory/package.json)
# comes from npm into tests/faktory/node_modules; the Python ones are in the
# test extra. Without npm or its registry the tests that need the Node client
# are skipped, saying why (CI requires them: .ci/run).
faktory-clients: $(NODE_STAMP)

$(NODE_STAMP): tests/faktory/package.json
	@cd tests/faktory && timeout 300 npm install --no-package-lock --no-audit --no-fund \
		--loglevel=error >/dev/null 2>&1 && touch node_modules/.installed \
		|| echo "npm could not install tests/faktory's packages: the Node client's tests are skipped"

fault-heavy: $(STAMP)  ## kill -9 under load, 200 cycles per fsync policy (about 8 minutes)
	LEASH_KILL9_CYCLES=200 $(PY) -m pytest -q -s --timeout 1800 tests/fault/test_kill9.py

sim-heavy: $(STAMP)  ## the seeded simulations of the group committer and the whole shell, 10 000 seeds a policy
	LEASH_SIM_SEEDS=10000 LEASH_SHELL_SEEDS=10000 $(PY) -m pytest -q -s -p no:randomly --timeout 3600 \
		tests/property/test_group_commit_sim.py tests/property/test_shell_sim.py

limits-heavy: $(STAMP)  ## 10 000 idle connections on one broker: memory per connection, the limit
	LEASH_IDLE_CONNECTIONS=10000 $(PY) -m pytest -q -s -p no:randomly \
		tests/integration/test_limits_load.py -k idle_connections

memory-heavy: $(STAMP)  ## 1,000,000 jobs, 200,000 batches and scheduled jobs through the core: memory stays flat
	LEASH_MEMORY_JOBS=1000000 LEASH_MEMORY_BATCHES=200000 LEASH_MEMORY_SCHEDULED=200000 \
		$(PY) -m pytest -q -s -p no:randomly --timeout 900 tests/unit/test_core_memory.py

recovery-heavy: $(STAMP)  ## the broker killed around a worker's kill -9, 100 cycles each order (about 6 minutes)
	LEASH_RESTART_CYCLES=100 $(PY) -m pytest -q -s -p no:randomly --timeout 1800 \
		tests/integration/test_recovery_defaults.py -k broker_killed

lint: $(STAMP)
	$(VENV)/bin/ruff check leash protocol broker client web tests bench docs/examples
	$(VENV)/bin/ruff format --check leash protocol broker client web tests bench docs/examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

# The peers are Debian packages: apt-get install beanstalkd redis-server.
# A peer that is not installed is skipped, with a note in the report.
bench: $(BENCH_STAMP)  ## Leash side by side with beanstalkd and Redis; writes bench/RESULTS.md (under 15 minutes)
	$(PY) -m bench

bench-quick: $(BENCH_STAMP)  ## a one-minute smoke run of the same harness (bench/out/results.md)
	$(PY) -m bench --quick

screenshot: $(STAMP)  ## the dashboard's overview, as a headless Chromium sees it, into docs/dashboard.png
	LEASH_DASHBOARD_PNG=docs/dashboard.png $(PY) -m pytest -q -p no:randomly \
		tests/web/test_browser.py -k every_page

clean:
	rm -rf $(VENV) leash-data .pytest_cache .mypy_cache .ruff_cache tests/faktory/node_modules
