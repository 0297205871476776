#!/usr/bin/env bash
# Idempotent set-up of what only the tests and the bench need, on top of scripts/setup.sh (which
# `make test`, `make integration` and `make bench` run first). Debian 12, as root. Quiet when
# everything is in place.
#
#   prometheus, promtool          tests/integration/test_metrics_and_health.py (scrape, alert rule tests)
#   systemd-journal-remote        tests/integration/test_fleet.py, bench/fleet.py (-remote, -upload)
#   debootstrap, bridge-test/systemd   test_systemd_unit.py, test_fleet.py, test_package_deb.py
#   debian:bookworm-slim          the image's base (debootstrap), test_container_image.py
#   podman, its API service       tests/integration/test_several_engines.py, bench (a second engine)
#   uidmap, a rootless Podman user (jbrootless) and its own API service
#                                 tests/integration/test_podman_*.py (marked ON_EACH_PODMAN)
#   debhelper, dh-virtualenv, lintian, python3.11-venv, python3.11-dev
#                                 tests/integration/test_package_deb.py (scripts/build-deb.sh)
#   a private containerd (CRI)    tests/integration/kubernetes/ (scripts/setup-cri.sh)
#   bridge-test/trixie-engines    Debian 13's Docker 26 and Podman 5, each run in a container, as
#                                 engines of the tests (scripts/build-trixie-engines.sh)
#
# Podman is test-only: on a real host the bridge never writes /etc/containers/containers.conf
# nor starts an engine. Here containers start only with that file's ulimits (the VM cannot set
# the default nofile limit), so it is written where missing, and `podman system service` is
# started where its socket does not answer.
#
# Installing systemd-journal-remote enables and starts nothing (its postinst only creates the
# systemd-journal-remote user); the tests run the binaries themselves, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup-test: $*"; }

# --- Debian packages -----------------------------------------------------------------------
packages=(prometheus systemd-journal-remote debootstrap podman)
packages+=(debhelper dh-virtualenv lintian python3.11-venv python3.11-dev)
packages+=(containerd busybox-static uidmap)
packages+=(${EXTRA_TEST_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
        cat "$log"; rm -f "$log"; say "apt-get install failed"; exit 1
    fi
    rm -f "$log"
fi

# --- systemd as PID 1 in a container, for the service and fleet tests --------------------------
# With systemd-journal-remote inside, so Debian's own upload and remote units run with the
# drop-ins of deploy/fleet. An image built before that lacks it and is built again, once.
DOCKER=/usr/bin/docker
IMAGE=bridge-test/systemd:latest
if ! "$DOCKER" version >/dev/null 2>&1; then
    say "dockerd does not answer: run scripts/setup.sh (make setup) first"
    exit 1
fi
has_image() { "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; }
image_complete() {
    "$DOCKER" run --rm --network none --entrypoint /bin/test "$IMAGE" \
        -x /lib/systemd/systemd-journal-remote >/dev/null 2>&1
}
if ! has_image || ! image_complete; then
    old=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    say "building $IMAGE (debootstrap, about a minute)"
    root=$(mktemp -d)
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,python3-venv,procps,systemd-journal-remote \
        bookworm "$root" >/dev/null
    tar -C "$root" -c . | "$DOCKER" import - "$IMAGE" >/dev/null
    rm -rf "$root"
    # the image it replaced, unless a container still uses it
    [ -z "$old" ] || "$DOCKER" image rm "$old" >/dev/null 2>&1 || true
fi

# --- the container image's base, for `make image` and its tests ----------------------------------
# No registry is reachable here: debian:bookworm-slim is made locally, the way Debian's own slim
# image is (debootstrap's minbase), where that tag is missing; a host that has it keeps its own.
BASE_IMAGE=debian:bookworm-slim
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "building $BASE_IMAGE (debootstrap minbase, about a minute)"
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" >/dev/null || { rm -rf "$root"; say "debootstrap of $BASE_IMAGE failed"; exit 1; }
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
fi

# --- Podman: its containers.conf (where missing), the test image, its API service ---------------
if [ ! -e /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n' \
        >/etc/containers/containers.conf
fi
PODMAN_IMAGE=localhost/bridge-test/busybox:latest
if ! podman image exists "$PODMAN_IMAGE" 2>/dev/null; then
    say "building $PODMAN_IMAGE"
    # an image saved by docker loads as localhost/<name> (no registry part)
    "$DOCKER" save bridge-test/busybox:latest | podman load -q >/dev/null 2>&1 || true
    podman image exists "$PODMAN_IMAGE" || { say "podman could not load the busybox image"; exit 1; }
fi
PODMAN_SOCK=/run/podman/podman.sock
if ! curl -sf --max-time 5 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; then
    say "starting podman system service on $PODMAN_SOCK"
    mkdir -p /run/podman
    # From /: a service started in the checkout keeps it as its working directory, and once
    # that is deleted (a clone made for a run, then removed) every container start fails.
    (cd / && setsid podman system service --time=0 "unix://$PODMAN_SOCK" \
        >>/var/log/podman-service.log 2>&1 </dev/null &)
    for _ in $(seq 1 100); do
        curl -sf --max-time 5 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf --max-time 5 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null \
        || { say "podman system service did not start"; exit 1; }
fi

# --- a rootless Podman: a user of its own, its image and its API service ------------------------
# No logind here, so its runtime directory (/run/user/UID, 0700) is made as logind would. The
# socket is made 0660, as the podman.socket user unit makes it (deploy/engines/).
ROOTLESS_USER=jbrootless
if ! id -u "$ROOTLESS_USER" >/dev/null 2>&1; then
    say "adding the rootless Podman user $ROOTLESS_USER"
    useradd --create-home --shell /usr/sbin/nologin "$ROOTLESS_USER"  # with /etc/sub[ug]id ranges
fi
grep -q "^$ROOTLESS_USER:" /etc/subuid \
    || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$ROOTLESS_USER"
rootless_uid=$(id -u "$ROOTLESS_USER")
rootless_run=/run/user/$rootless_uid
install -d -o "$ROOTLESS_USER" -g "$ROOTLESS_USER" -m 0700 "$rootless_run" "$rootless_run/podman"
as_rootless() {
    (cd / && runuser -u "$ROOTLESS_USER" -- env XDG_RUNTIME_DIR="$rootless_run" \
        HOME="$(getent passwd "$ROOTLESS_USER" | cut -d: -f6)" podman "$@")
}
if ! as_rootless image exists "$PODMAN_IMAGE" 2>/dev/null; then
    say "building $PODMAN_IMAGE for $ROOTLESS_USER"
    podman save "$PODMAN_IMAGE" | as_rootless load -q >/dev/null 2>&1 || true
    as_rootless image exists "$PODMAN_IMAGE" \
        || { say "rootless podman could not load the busybox image"; exit 1; }
fi
ROOTLESS_SOCK=$rootless_run/podman/podman.sock
if ! curl -sf --max-time 5 --unix-socket "$ROOTLESS_SOCK" http://d/_ping >/dev/null 2>&1; then
    say "starting $ROOTLESS_USER's podman system service on $ROOTLESS_SOCK"
    (cd / && setsid runuser -u "$ROOTLESS_USER" -- env XDG_RUNTIME_DIR="$rootless_run" \
        podman system service --time=0 "unix://$ROOTLESS_SOCK" \
        >>/var/log/podman-rootless-service.log 2>&1 </dev/null &)
    for _ in $(seq 1 100); do
        curl -sf --max-time 5 --unix-socket "$ROOTLESS_SOCK" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf --max-time 5 --unix-socket "$ROOTLESS_SOCK" http://d/_ping >/dev/null \
        || { say "$ROOTLESS_USER's podman system service did not start"; exit 1; }
fi
chmod 0660 "$ROOTLESS_SOCK"

# --- Debian 13's engines (Docker 26, Podman 5), for the tests per engine version -----------------
scripts/build-trixie-engines.sh >/dev/null

# --- a private containerd with its CRI plugin, for the Kubernetes source's tests -----------------
# Its own root, state and sockets under /var/lib/journald-bridge-cri: never Docker's containerd.
scripts/setup-cri.sh
