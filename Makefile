# abaco: `make demo` and `make test` work from a clean clone (they install what they need).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
LOANS  ?= 250000

.DEFAULT_GOAL := help
.PHONY: help install postgres demo test lint format bench bench-all clean check-deploy install-units install-cron

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $@

install: $(BIN)/.installed ## Create .venv with abaco and its test and lint tools

postgres: ## Make sure PostgreSQL's server programs are present (installs them as root on Debian)
	@scripts/ensure-postgres.sh

demo: install postgres ## Private PostgreSQL + 20,000 synthetic loans + every export, then clean up
	$(BIN)/abaco demo

test: install postgres ## The whole test suite against a real PostgreSQL it starts itself
	$(BIN)/python -m pytest

lint: install ## ruff (lint and format) and mypy --strict
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install postgres ## Time `abaco export dpd` on LOANS loans (default 250,000) beside psql COPY
	$(BIN)/python benchmarks/bench_dpd.py --loans $(LOANS)

bench-all: install postgres ## Every dataset, export all and a 12-month kpi backfill on LOANS loans
	$(BIN)/python benchmarks/bench_all.py --loans $(LOANS)

check-deploy: install ## Units, cron, install script, Terraform and runbooks: tests, then fmt + checkov
	$(BIN)/python -m pytest -q tests/test_deploy.py tests/test_terraform.py tests/test_runbooks.py
	scripts/check-terraform.sh

install-units: ## On a VM, as root: user abaco, /opt/abaco venv, /etc/abaco/abaco.env, units, timers
	deploy/install.sh --systemd

install-cron: ## On a VM without systemd, as root: the same with /etc/cron.d/abaco
	deploy/install.sh --cron

clean: ## Remove the venv and caches (never the runtime tree)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
