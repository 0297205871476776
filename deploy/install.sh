#!/usr/bin/env bash
# Install or remove journald-bridge as a systemd service.
#
#   deploy/install.sh install [--wheels DIR]   # venv in /opt/journald-bridge, unit, config
#   deploy/install.sh uninstall                # keeps /etc/journald-bridge and the state
#
# With --wheels (built by `make wheels`) nothing is downloaded: it works offline.
# An existing /etc/journald-bridge/bridge.toml is never overwritten (the new default goes
# next to it as bridge.toml.dist).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/journald-bridge
unit=/etc/systemd/system/journald-bridge.service
confdir=/etc/journald-bridge

systemd_running() { [ -d /run/systemd/system ]; }

do_install() {
    local wheels=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --wheels) wheels=$(cd "$2" && pwd); shift 2 ;;
            *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
        esac
    done
    local python
    python=$(command -v python3.11 || command -v python3)
    [ -x "$prefix/bin/python" ] || "$python" -m venv "$prefix"
    if [ -n "$wheels" ]; then
        "$prefix/bin/pip" install --quiet --no-index --find-links "$wheels" --upgrade journald-bridge
    else
        "$prefix/bin/pip" install --quiet --upgrade "$here/.."
    fi

    install -D -m 0644 "$here/journald-bridge.service" "$unit"
    mkdir -p "$confdir"
    local example="$here/../config/bridge.toml"
    [ -f "$example" ] || example="$prefix/share/journald-bridge/bridge.toml"
    if [ -f "$confdir/bridge.toml" ]; then
        cmp -s "$example" "$confdir/bridge.toml" || install -m 0644 "$example" "$confdir/bridge.toml.dist"
    else
        install -m 0644 "$example" "$confdir/bridge.toml"
    fi

    # The unit runs as a dynamic user in the docker group; a host whose socket is owned by a
    # group of another name (or none) gets a docker group with the socket's gid.
    if ! getent group docker >/dev/null && [ -S /var/run/docker.sock ]; then
        groupadd --system --gid "$(stat -c %g /var/run/docker.sock)" docker
    fi
    getent group systemd-journal >/dev/null || groupadd --system systemd-journal

    "$prefix/bin/journald-bridge" check-config "$confdir/bridge.toml"
    if systemd_running; then
        systemctl daemon-reload
    fi
    echo "installed: $prefix, $unit, $confdir/bridge.toml"
    echo "start with: systemctl enable --now journald-bridge"
}

do_uninstall() {
    if systemd_running; then
        systemctl disable --now journald-bridge.service 2>/dev/null || true
    fi
    rm -f "$unit"
    rm -rf "$prefix"
    if systemd_running; then
        systemctl daemon-reload
    fi
    echo "removed $prefix and $unit; kept $confdir and /var/lib/private/journald-bridge"
}

case "${1:-}" in
    install) shift; do_install "$@" ;;
    uninstall) do_uninstall ;;
    *) echo "usage: $0 install [--wheels DIR] | uninstall" >&2; exit 2 ;;
esac
