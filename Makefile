# The two set-up commands are `make up` and `make test`; everything they need
# is installed by devstack/bootstrap.sh (idempotent).
PY := .venv/bin/python

.PHONY: up down test lint unit bootstrap bench status

bootstrap:
	@devstack/bootstrap.sh

up: bootstrap
	@$(PY) -m devstack.stack up

down: bootstrap
	@$(PY) -m devstack.stack down

status: bootstrap
	@$(PY) -m devstack.stack status

lint: bootstrap
	.venv/bin/ruff check --output-format concise .
	.venv/bin/mypy

test: lint
	.venv/bin/pytest

unit: bootstrap
	.venv/bin/pytest -m "not kafka and not postgres and not slurm" -k "not postgres"

# Every benchmark, then one table (also bench/results/summary.json); see bench/summary.py.
bench: bootstrap
	$(PY) -m bench.summary --run
