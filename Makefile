# The two commands of the README: `make up` and `make test`. Everything else is `smartshelf ...`.
SHELL := /bin/bash
VENV := .venv
SMARTSHELF := $(VENV)/bin/smartshelf

# `make up` runs the demo on the simulated clock at the reference demo speed (a simulated day in 2.4 h);
# override on the command line, e.g. `make up TIME_MULTIPLIER=60`; `make up STORES=4` runs a chain of 4 stores.
up: export USE_SIMULATED_TIME ?= 1
up: export TIME_MULTIPLIER ?= 10
up: export STORES ?= 1

.PHONY: install up down status test test-unit test-integration clean

install:
	@bash scripts/bootstrap.sh

up: install
	@$(SMARTSHELF) up
	@$(SMARTSHELF) status

down:
	@$(SMARTSHELF) down

status:
	@$(SMARTSHELF) status

test: install
	@$(VENV)/bin/python -m pytest -q

test-unit: install
	@$(VENV)/bin/python -m pytest -q tests/unit

test-integration: install
	@$(VENV)/bin/python -m pytest -q tests/integration

clean: down
	rm -rf run delta data/metrics
