# The two commands of the README: `make up` and `make test`. Everything else is `smartshelf ...`.
SHELL := /bin/bash
VENV := .venv
SMARTSHELF := $(VENV)/bin/smartshelf

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
