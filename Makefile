# Everything a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: help venv infra-up infra-down infra-status run stop status test unit integration e2e lint format browser chaos load bench clean

help:
	@echo "make run          start local Kafka + MongoDB-protocol server and all six services"
	@echo "make test         install everything, start the servers, run the whole suite"
	@echo "make unit | integration | e2e   one tier of the suite"
	@echo "make infra-up | infra-down | infra-status   the local servers only"
	@echo "make lint         ruff"
	@echo "make chaos        the crash-consistency suite (long)"
	@echo "make load | bench load tests against a running stack"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

infra-up: venv
	$(PY) -m devstack.infra up

infra-down: venv
	$(PY) -m devstack.infra down

infra-status: venv
	$(PY) -m devstack.infra status

run: infra-up
	$(PY) main.py inventory seed
	$(PY) -m devstack.credentials
	$(PY) main.py

status: venv
	$(PY) main.py --status

# Debian's Chromium and its driver, for the dashboard's browser test.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing chromium and chromium-driver (Debian packages) for the dashboard test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# Chaos before e2e: the e2e stack stays up until the session ends and uses the same ports.
test: infra-up browser
	$(PYTEST) tests/unit tests/integration tests/chaos tests/e2e

unit: venv
	$(PYTEST) tests/unit

integration: infra-up
	$(PYTEST) tests/integration

e2e: infra-up browser
	$(PYTEST) tests/e2e

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Load tests against a running stack (`make run` in another terminal).
USERS ?= 50
SPAWN_RATE ?= 10
DURATION ?= 60s
load: venv
	@mkdir -p load/reports
	$(PY) -m locust -f load/locustfile.py --headless -u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) \
		--csv load/reports/locust --html load/reports/locust.html --only-summary

BENCH_ARGS ?= --orders 600 --rate max
bench: venv
	$(PY) -m load.bench $(BENCH_ARGS)

# Two runs: 1,000 orders with one worker per service, then three workers per service so that
# killing one replica makes its group rebalance mid-batch. Each kill -9s every service, the broker
# and the store. CHAOS_SEED reproduces a run (printed at its start).
CHAOS_ARGS ?= --orders 1000
CHAOS_REPLICA_ARGS ?= --orders 400 --replicas 3
CHAOS_SEED ?=
chaos: infra-up
	$(PY) -m tests.chaos.run $(CHAOS_ARGS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))
	$(PY) -m tests.chaos.run $(CHAOS_REPLICA_ARGS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
