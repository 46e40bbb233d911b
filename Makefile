# DevOps Agent: the index of commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench browser clean-db chaos

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install DevOps Agent with its dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install ## Start the app on http://127.0.0.1:5000 (SQLite, offline agent, demo payments, sandbox cloud)
	$(BIN)/devops-agent serve

browser: ## Install Debian's Chromium for the browser tests (when missing)
	@bash scripts/ensure-command chromium chromium fonts-dejavu-core

test: install browser ## Run the test suite (SQLite and PostgreSQL)
	$(BIN)/pytest

chaos: install ## Chats under load on 2 workers (PostgreSQL) while a worker is killed and connections cut; then the audit
	$(BIN)/pytest tests/ops/test_chaos.py -q

lint: install ## ruff, mypy, import contracts, and migrations in step with the models
	$(BIN)/ruff check src tests bench migrations app.py init_subscription_system.py
	$(BIN)/ruff format --check src tests bench app.py init_subscription_system.py
	$(BIN)/mypy
	$(BIN)/lint-imports
	@tmp=$$(mktemp -d) && DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic upgrade heads \
		&& DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic check; rc=$$?; rm -rf $$tmp; exit $$rc

format: install ## Format and fix what ruff can
	$(BIN)/ruff format src tests bench app.py init_subscription_system.py
	$(BIN)/ruff check --fix src tests bench migrations app.py init_subscription_system.py

bench: install ## Measure the HTTP paths with wrk against the running server, beside the database limit (pgbench, sqlite3); writes bench/results/*.json
	@bash scripts/ensure-command wrk wrk
	@bash scripts/ensure-command pgbench postgresql-client
	$(BIN)/python -m bench
