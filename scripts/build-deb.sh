#!/usr/bin/env bash
# Builds journald-bridge_<version>_amd64.deb with Debian's tooling (debhelper, dh-virtualenv) and
# checks it with lintian: `make deb`, and the package tests.
#
#   scripts/build-deb.sh [OUTDIR]      # default dist/; prints the .deb's path
#
# The version is bridge.__version__ (the one source). The dependencies' wheels are built first,
# once, into a wheelhouse keyed by the dependency list and the Python version; the package build
# itself then installs from there, offline. The finished .deb is kept too, keyed by a hash of the
# files it is built from, so a second build of the same sources costs nothing. Both live under
# $JOURNALD_BRIDGE_BUILD_CACHE (default ~/.cache/journald-bridge-build), outside the clone.
# The wheels are built by Debian's own /usr/bin/python3.11 (in a venv of its own in the cache),
# the interpreter the package's venv runs on: a compiled module built by another Python 3.11
# (pyenv's, say) would carry that one's library path; so is pip's own cache of built wheels
# left out, and systemd-python is always built here, from its source.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "build-deb: $*" >&2; }
fail() { say "$*"; exit 1; }

out=${1:-dist}
cache=${JOURNALD_BRIDGE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/journald-bridge-build}
[ -x /usr/bin/python3.11 ] || fail "no /usr/bin/python3.11: apt-get install python3.11-venv python3.11-dev"
command -v dpkg-buildpackage >/dev/null && command -v dh_virtualenv >/dev/null && command -v lintian >/dev/null \
    || fail "missing build tools: apt-get install debhelper dh-virtualenv lintian"

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' bridge/__init__.py)
[ -n "$version" ] || fail "no __version__ in bridge/__init__.py"
# PEP 440 pre-releases sort before the release in Debian only with a tilde: 1.0rc1 -> 1.0~rc1.
deb_version=$(echo "$version" | sed -E 's/(a|b|rc|\.dev)([0-9]+)$/~\1\2/')
deb_name="journald-bridge_${deb_version}_amd64.deb"

# What the package is built from: nothing else is copied into the build.
sources=(pyproject.toml README.md CHANGELOG.md bridge config/bridge.toml deploy/journald-bridge.service
         debian scripts/build-deb.sh)
hash_files() { find "$@" -name __pycache__ -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort \
    | while read -r f; do printf '%s\n' "$f"; if [ -L "$f" ]; then readlink "$f"; else cat "$f"; fi; done \
    | sha256sum | cut -c1-16; }
mkdir -p "$cache" "$out"
# README.md only becomes the wheel's long description, which nothing installed reads: an edit to
# it alone reuses the cached package.
keyed=()
for f in "${sources[@]}"; do [ "$f" = README.md ] || keyed+=("$f"); done
source_key=$(hash_files "${keyed[@]}")
cached="$cache/debs/$source_key/$deb_name"
if [ -f "$cached" ]; then
    cp "$cached" "$out/"
    echo "$out/$deb_name"
    exit 0
fi

# --- the wheelhouse: every dependency, and setuptools to build the bridge itself ----------
deps=$(/usr/bin/python3.11 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
wheel_key=$(printf '%s\n%s\n' "$deps" "$(/usr/bin/python3.11 -VV)" | sha256sum | cut -c1-16)
wheelhouse="$cache/wheels-$wheel_key"
if [ ! -d "$wheelhouse" ]; then
    python="$cache/python3.11"
    if [ ! -x "$python/bin/pip" ]; then
        rm -rf "$python"
        # Debian's pip cannot build a setup.py-only sdist (systemd-python) without wheel
        /usr/bin/python3.11 -m venv "$python" && "$python/bin/python" -m pip install -q \
            --disable-pip-version-check --upgrade pip setuptools wheel \
            || { rm -rf "$python"; fail "cannot create a venv with pip, setuptools and wheel"; }
    fi
    say "building the dependencies' wheels into $wheelhouse (downloads from PyPI)"
    tmp=$(mktemp -d "$cache/wheels.tmp.XXXXXX")
    mapfile -t dep_list <<<"$deps"
    "$python/bin/python" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-binary systemd-python \
        --wheel-dir "$tmp" "setuptools>=68" wheel "${dep_list[@]}" >"$tmp.log" 2>&1 \
        || { cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; fail "pip wheel failed"; }
    rm -f "$tmp.log"
    mv -T "$tmp" "$wheelhouse"
fi

# --- the package ---------------------------------------------------------------------------
# From the wheelhouse alone: PIP_CONFIG_FILE=/dev/null keeps the machine's pip settings (other
# indexes, other wheel directories) out of the build.
build=$(mktemp -d "${TMPDIR:-/tmp}/jb-deb.XXXXXX")
trap 'rm -rf "$build"' EXIT
src="$build/journald-bridge-$deb_version"
mkdir -p "$src"
tar -c --exclude=__pycache__ "${sources[@]}" | tar -C "$src" -x
cat >"$src/debian/changelog" <<CHANGELOG
journald-bridge ($deb_version) unstable; urgency=medium

  * Version $version: see /usr/share/doc/journald-bridge/changelog.gz.

 -- journald-bridge maintainers <maintainers@users.noreply.r-seed-378b92bb.example>  $(date -R)
CHANGELOG
say "building $deb_name"
if ! (cd "$src" && JOURNALD_BRIDGE_WHEELHOUSE="$wheelhouse" PIP_CONFIG_FILE=/dev/null dpkg-buildpackage -b -us -uc) >"$build/build.log" 2>&1; then
    tail -40 "$build/build.log" >&2
    fail "dpkg-buildpackage failed (the last lines above)"
fi
say "lintian"
lintian --fail-on error,warning --info "$build/$deb_name" >&2 || fail "lintian found problems (above)"
mkdir -p "$(dirname "$cached")"
cp "$build/$deb_name" "$cached.tmp" && mv "$cached.tmp" "$cached"
cp "$cached" "$out/"
echo "$out/$deb_name"
