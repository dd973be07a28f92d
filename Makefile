# abaco: `make demo` and `make test` work from a clean clone (they install what they need).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
LOANS  ?= 250000
ROWS   ?= 5000000
# The hash-checked dependency locks (requirements/README.md); `make lock` regenerates them.
LOCKS   = requirements/runtime.lock requirements/dev.lock
LOCK_FLAGS = --quiet --generate-hashes --universal --python-version 3.11 \
	--annotation-style line --custom-compile-command 'make lock' \
	$(if $(UPGRADE),--upgrade) $(foreach p,$(UPGRADE_PACKAGE),--upgrade-package $(p))

.DEFAULT_GOAL := help
.PHONY: help install lock audit-deps postgres demo report-png test lint format bench bench-all bench-table bench-upload bench-report bench-lake \
	clean check-deploy \
	install-units install-cron

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Every dependency (and pip, setuptools, wheel) from the dev lock, each file checked against its
# sha256; then abaco itself, editable, with nothing else (--no-deps) and no build download
# (--no-build-isolation: setuptools comes from the lock).
$(BIN)/.installed: pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/.installed ## Create .venv from requirements/dev.lock (hash-checked) with abaco

lock: install ## Re-resolve requirements/*.lock from pyproject.toml (UPGRADE=1 or UPGRADE_PACKAGE=x)
	$(BIN)/uv pip compile $(LOCK_FLAGS) --extra test --extra dev \
		-o requirements/dev.lock pyproject.toml requirements/build.in
	$(BIN)/uv pip compile $(LOCK_FLAGS) -c requirements/dev.lock \
		-o requirements/runtime.lock pyproject.toml requirements/build.in

audit-deps: install ## pip-audit --strict of both locks (needs PyPI's vulnerability data: network)
	@status=0; for lock in $(LOCKS); do \
		echo "pip-audit --strict -r $$lock"; \
		$(BIN)/pip-audit --strict --disable-pip --progress-spinner off -r $$lock || status=1; \
	done; exit $$status

postgres: ## Make sure PostgreSQL's server programs are present (installs them as root on Debian)
	@scripts/ensure-postgres.sh

demo: install postgres ## Private PostgreSQL + 20,000 synthetic loans + every export, then clean up
	$(BIN)/abaco demo

report-png: install postgres ## docs/report.png: the demo's report (abaco report) as chromium shows it
	$(BIN)/python scripts/report-screenshot.py

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

bench-table: install postgres ## A ROWS-row table (default 5,000,000) into Parquet: abaco vs DuckDB, ConnectorX, pandas, psql
	$(BIN)/python benchmarks/bench_table.py --rows $(ROWS)

bench-upload: install postgres ## abaco upload of a LOANS-loan export all to a folder, moto S3, the GCS emulator
	$(BIN)/python benchmarks/bench_upload.py --loans $(LOANS)

bench-report: install postgres ## abaco report of a LOANS-loan export all (time, peak memory)
	$(BIN)/python benchmarks/bench_report.py --loans $(LOANS)

CHANGES ?= 1000000
LOAD_LOANS ?= 1000000
bench-lake: install postgres ## lake: CHANGES changes decoded and synced vs the floor; the initial load of LOAD_LOANS loans
	$(BIN)/python benchmarks/bench_lake.py --changes $(CHANGES) --load-loans $(LOAD_LOANS)

check-deploy: install ## Units, cron, install script, Terraform and runbooks: tests, then fmt + checkov
	$(BIN)/python -m pytest -q tests/test_deploy.py tests/test_terraform.py tests/test_runbooks.py
	scripts/check-terraform.sh

install-units: ## On a VM, as root: user abaco, /opt/abaco venv, /etc/abaco/abaco.env, units, timers
	deploy/install.sh --systemd

install-cron: ## On a VM without systemd, as root: the same with /etc/cron.d/abaco
	deploy/install.sh --cron

clean: ## Remove the venv and caches (never the runtime tree)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
