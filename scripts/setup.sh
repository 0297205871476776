#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine, as root: packages, .venv, journald, dockerd, test image.
# Only what the bridge needs to run (`make run`); what only the tests and the bench need
# (prometheus, systemd-journal-remote, the systemd image) is in scripts/setup-test.sh.
# Starts journald and dockerd only where they are not already running (a real host runs both
# under systemd; never start second copies there). Quiet when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }

# --- Debian packages -----------------------------------------------------------------------
packages=(docker.io busybox-static libsystemd-dev pkg-config gcc python3-dev python3-venv curl)
packages+=(${EXTRA_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the virtual environment -----------------------------------------------------------------
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    say "creating .venv with $($PY --version)"
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    log=$(mktemp)
    if ! { .venv/bin/pip install -q --disable-pip-version-check --upgrade pip &&
           .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
        cat "$log"; say "pip install failed"; exit 1
    fi
    rm -f "$log"
    .venv/bin/python -c 'import bridge, docker, systemd.journal, pydantic, prometheus_client, pytest, hypothesis, grpc'
    touch .venv/.installed
fi

# --- systemd-journald --------------------------------------------------------------------------
if [ ! -S /run/systemd/journal/socket ] || ! pgrep -x systemd-journal >/dev/null; then
    say "starting systemd-journald"
    # systemd hosts raise the datagram queue from the kernel's 10 to 512 (sysctl.d/50-default.conf)
    # before journald binds its socket; a standalone journald needs the same to be comparable.
    [ "$(cat /proc/sys/net/unix/max_dgram_qlen)" -ge 512 ] || sysctl -qw net.unix.max_dgram_qlen=512 || true
    mkdir -p /run/systemd/journal
    setsid /lib/systemd/systemd-journald >>/var/log/journald-standalone.log 2>&1 < /dev/null &
    for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
    [ -S /run/systemd/journal/socket ] || { say "journald did not start"; exit 1; }
fi

# --- dockerd -----------------------------------------------------------------------------------
DOCKER=/usr/bin/docker
if ! "$DOCKER" version >/dev/null 2>&1; then
    say "starting dockerd"
    setsid dockerd --iptables=false --bridge=none >>/var/log/dockerd-standalone.log 2>&1 < /dev/null &
    for _ in $(seq 300); do "$DOCKER" version >/dev/null 2>&1 && break; sleep 0.1; done
    "$DOCKER" version >/dev/null 2>&1 || { say "dockerd did not start"; exit 1; }
fi

# --- the test image ----------------------------------------------------------------------------
if ! "$DOCKER" image inspect bridge-test/busybox:latest >/dev/null 2>&1; then
    say "building bridge-test/busybox:latest"
    root=$(mktemp -d)
    mkdir -p "$root/bin"
    cp /bin/busybox "$root/bin/"
    for c in sh echo seq sleep cat printf yes head awk dd tr; do ln -sf busybox "$root/bin/$c"; done
    tar -C "$root" -c . | "$DOCKER" import - bridge-test/busybox:latest >/dev/null
    rm -rf "$root"
fi

