#!/usr/bin/env bash
# Builds the image journald-bridge:<version> from deploy/container/Dockerfile: `make image`.
#
#   scripts/build-image.sh [DEB]     # default: the package scripts/build-deb.sh builds
#
# The tag is the package's version (bridge.__version__). The base is debian:bookworm-slim, or
# $BASE; a machine without a registry (these test VMs) gets a local one from debootstrap in
# scripts/setup-test.sh. apt inside the build reaches Debian's mirror through the host's
# network (--network host: dockerd here has no bridge network). Prints the image's tag.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "build-image: $*" >&2; }
fail() { say "$*"; exit 1; }

deb=${1:-$(scripts/build-deb.sh dist)}
[ -f "$deb" ] || fail "no package at $deb"
version=$(dpkg-deb -f "$deb" Version)
# the image tag is the Python version; the package's differs only in a pre-release's ~
tag="journald-bridge:$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' bridge/__init__.py)"
base=${BASE:-debian:bookworm-slim}
docker image inspect "$base" >/dev/null 2>&1 || [ -n "${BASE:-}" ] || \
    say "$base is not here: docker pulls it (on a machine without a registry: make setup-test)"

context=$(mktemp -d "${TMPDIR:-/tmp}/jb-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp deploy/container/Dockerfile "$context/"
cp "$deb" "$context/"
say "building $tag (package $version, base $base)"
docker build --quiet --network host --build-arg BASE="$base" --build-arg DEB="$(basename "$deb")" \
    --label org.opencontainers.image.version="$version" -t "$tag" "$context" >/dev/null \
    || fail "docker build failed"
echo "$tag"
