# journald-bridge. On a fresh Debian 12 machine, as root: `make run` or `make test`.
.PHONY: setup run test unit integration lint bench clean

CONFIG ?= config/bridge.toml
PYTEST ?= .venv/bin/pytest

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/journald-bridge run --config $(CONFIG)

lint: setup
	.venv/bin/ruff check bridge tests
	.venv/bin/mypy

unit: setup
	$(PYTEST) tests/unit

integration: setup
	$(PYTEST) tests/integration

test: setup
	.venv/bin/ruff check bridge tests
	.venv/bin/mypy
	$(PYTEST) tests

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
