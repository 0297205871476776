#!/usr/bin/env bash
# Builds, once, the test image of Debian 13 (trixie)'s container engines and prints its name:
#
#   scripts/build-trixie-engines.sh          # -> bridge-test/trixie-engines:<revision>
#
# Docker 26.1 (docker.io), Podman 5.4 (podman, with its quadlet generator, and uidmap's setuid
# newuidmap/newgidmap for a rootless user's subordinate IDs) and containerd 1.7, beside systemd,
# systemd-sysv and dbus, so the same image runs either one engine's daemon as its command or
# systemd as PID 1 (Podman's quadlet units). The tests run each engine in such a
# container on the host's dockerd, with its data root bind-mounted at the same path on the
# host, so a bridge on the host reads the engine's log files (tests/integration/engines.py).
#
# Idempotent: an image of this revision that holds both engines is kept, and the script only
# prints its name. Bump REVISION when what goes into the image changes. Debian 13 comes from
# the host's Debian mirror (suite trixie; $TRIXIE_MIRROR overrides it). A step that fails, a
# download above all, ends the script with one line naming that step; its output is kept.
#
# Test-only: on a real host nothing of this is installed or started.
set -euo pipefail
cd "$(dirname "$0")/.."

REVISION=2
IMAGE=bridge-test/trixie-engines:$REVISION
MIRROR=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
PACKAGES="docker.io podman uidmap containerd systemd systemd-sysv dbus"
LOGS=/var/log/journald-bridge-tests

say() { echo "build-trixie-engines: $*" >&2; }

complete() {
    docker run --rm --network none --entrypoint /bin/sh "$IMAGE" -c \
        'dockerd --version | grep -q "version 26\." && podman --version | grep -q "version 5\." &&
         test -x /usr/lib/systemd/system-generators/podman-system-generator -a -x /lib/systemd/systemd &&
         test -u /usr/bin/newuidmap -a -u /usr/bin/newgidmap' \
        >/dev/null 2>&1
}

if docker image inspect "$IMAGE" >/dev/null 2>&1 && complete; then
    echo "$IMAGE"
    exit 0
fi

mkdir -p "$LOGS"
log="$LOGS/build-trixie-engines.log"
: >"$log"
root=$(mktemp -d "${TMPDIR:-/tmp}/jb-trixie.XXXXXX")
cleanup() {
    for m in proc sys dev/pts dev; do umount "$root/$m" 2>/dev/null || true; done
    rm -rf "$root"
}
trap cleanup EXIT

# step NAME COMMAND...: runs one step with its output in $log; on failure one line names it
step() {
    local name=$1
    shift
    echo "--- $name" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        say "building $IMAGE failed at: $name ($(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160); full output in $log)"
        exit 1
    fi
}
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

say "building $IMAGE (debootstrap of trixie from $MIRROR, then $PACKAGES; about a minute)"
command -v debootstrap >/dev/null || step "apt-get install debootstrap" \
    apt-get install -y -qq --no-install-recommends debootstrap
[ -e /usr/share/debootstrap/scripts/trixie ] || {
    say "building $IMAGE failed at: debootstrap has no trixie script (upgrade debootstrap)"
    exit 1
}
step "debootstrap trixie from $MIRROR (download of the base system)" \
    debootstrap --variant=minbase trixie "$root" "$MIRROR"
# no service starts inside the chroot while packages are installed
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
step "apt-get update in trixie (download of the package lists)" in_root apt-get update -q
# shellcheck disable=SC2086  # a list of package names
step "apt-get install $PACKAGES in trixie (download of the engines)" \
    in_root apt-get install -y -q --no-install-recommends $PACKAGES
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
# These VMs cannot raise the default nofile limit: containers start only with explicit ulimits.
mkdir -p "$root/etc/containers/containers.conf.d"
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n' \
    >"$root/etc/containers/containers.conf.d/10-ulimits.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
step "docker import of $IMAGE" sh -c "tar -C '$root' -c . | docker import - '$IMAGE'"
complete || { say "building $IMAGE failed at: the image lacks Docker 26, Podman 5, uidmap or systemd"; exit 1; }
# the image it replaced, unless a container still uses it
[ -z "$old" ] || docker image rm "$old" >/dev/null 2>&1 || true
echo "$IMAGE"
