# journald-bridge. On a fresh Debian 12 machine, as root: `make run` or `make test`.
.PHONY: setup setup-test run test unit integration lint bench clean wheels install uninstall deb image

CONFIG ?= config/bridge.toml
# What `make deb` needs beyond `make setup` (scripts/setup-test.sh installs them too, for the tests).
DEB_TOOLS = debhelper dh-virtualenv lintian python3.11-venv python3.11-dev
PYTEST ?= .venv/bin/pytest

# What the bridge needs to run; `make run` installs nothing else.
setup:
	@scripts/setup.sh

# Beyond that, what only the tests and the bench need (prometheus, systemd-journal-remote,
# the systemd image).
setup-test: setup
	@scripts/setup-test.sh

run: setup
	.venv/bin/journald-bridge run --config $(CONFIG)

lint: setup
	.venv/bin/ruff check bridge tests bench
	.venv/bin/mypy

unit: setup
	$(PYTEST) tests/unit

integration: setup-test
	$(PYTEST) tests/integration

test: setup-test
	.venv/bin/ruff check bridge tests bench
	.venv/bin/mypy
	$(PYTEST) tests

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Wheels of the bridge and every dependency, for an offline `deploy/install.sh install --wheels wheels`.
wheels: setup
	rm -rf wheels && .venv/bin/pip wheel --quiet --disable-pip-version-check --wheel-dir wheels .

install: wheels
	deploy/install.sh install --wheels wheels

uninstall:
	deploy/install.sh uninstall

# dist/journald-bridge_<version>_amd64.deb (bridge/__init__.py's version) with Debian's tooling
# (debhelper, dh-virtualenv), lintian clean. The dependencies' wheels and the built packages are
# cached in ~/.cache/journald-bridge-build.
deb:
	@EXTRA_PACKAGES="$(DEB_TOOLS)" scripts/setup.sh
	scripts/build-deb.sh dist

# journald-bridge:<version>: that package on debian:bookworm-slim (deploy/container/Dockerfile).
# Where no registry is reachable, `make setup-test` makes the base locally.
image: deb
	scripts/build-image.sh "$$(scripts/build-deb.sh dist)"

# The benchmark on the real dockerd, Podman and journald; writes bench/results.md (about 20 minutes).
bench: setup-test
	.venv/bin/python bench/run.py
