#!/usr/bin/env bash
# Install the fleet's drop-ins for Debian 12's own systemd-journal-upload / -remote units.
#
#   install.sh collector PKI NAME [--allow CIDR]...  collector: PKI/NAME.key, PKI/NAME.crt;
#                                                    HTTPS on 19532, from localhost and each CIDR
#   install.sh host PKI NAME URL                     host: PKI/ca.crt, PKI/NAME.key, PKI/NAME.crt;
#                                                    upload the local journal to URL (https://...)
#   install.sh uninstall                             remove what either installed (keeps the
#                                                    collected journals and /etc/journal-fleet)
#
# PKI is the directory fleet-ca.sh wrote. Needs `apt-get install systemd-journal-remote`.
# Installs files and reloads systemd; starting is left to you (the commands are printed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
etc=/etc/systemd
units=/etc/systemd/system
keys=/etc/journal-fleet

usage() { sed -n '2,11p' "$0" >&2; exit 64; }
systemd_running() { [ -d /run/systemd/system ]; }
need_package() {
    [ -x /lib/systemd/systemd-journal-remote ] ||
        { echo "install.sh: systemd-journal-remote is not installed (apt-get install systemd-journal-remote)" >&2; exit 1; }
}
secret() { install -D -m 0600 -o root -g root "$1" "$2"; }
reload() { if systemd_running; then systemctl daemon-reload; fi; }

collector() {
    [ $# -ge 2 ] || usage
    local pki=$1 name=$2 allow=()
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --allow) [ $# -ge 2 ] || usage; allow+=("$2"); shift 2 ;;
            *) usage ;;
        esac
    done
    need_package
    secret "$pki/$name.key" "$keys/remote.key"
    secret "$pki/$name.crt" "$keys/remote.crt"
    install -D -m 0644 "$here/collector/journal-remote.conf.d/fleet.conf" "$etc/journal-remote.conf.d/fleet.conf"
    install -D -m 0644 "$here/collector/systemd-journal-remote.service.d/fleet.conf" \
        "$units/systemd-journal-remote.service.d/fleet.conf"
    install -D -m 0644 "$here/collector/systemd-journal-remote.socket.d/fleet.conf" \
        "$units/systemd-journal-remote.socket.d/fleet.conf"
    local allowed="$units/systemd-journal-remote.socket.d/fleet-allow.conf"
    if ((${#allow[@]})); then
        { echo "# The fleet's networks (install.sh collector --allow)."; echo "[Socket]"
          printf 'IPAddressAllow=%s\n' "${allow[@]}"; } >"$allowed"
        chmod 0644 "$allowed"
    else
        rm -f "$allowed"
    fi
    install -m 0644 "$here/collector/journal-remote-vacuum.service" "$here/collector/journal-remote-vacuum.timer" "$units/"
    mkdir -p /var/log/journal/remote
    reload
    echo "collector installed: $keys/remote.{key,crt}, drop-ins for systemd-journal-remote.{service,socket}"
    echo "start with: systemctl enable --now systemd-journal-remote.socket journal-remote-vacuum.timer"
}

host() {
    [ $# -eq 3 ] || usage
    local pki=$1 name=$2 url=$3
    case "$url" in https://*) ;; *) echo "install.sh: the URL must be https://..." >&2; exit 64 ;; esac
    need_package
    secret "$pki/ca.crt" "$keys/ca.crt"
    secret "$pki/$name.key" "$keys/upload.key"
    secret "$pki/$name.crt" "$keys/upload.crt"
    mkdir -p "$etc/journal-upload.conf.d"
    sed "s|^URL=.*|URL=$url|" "$here/host/journal-upload.conf.d/fleet.conf" >"$etc/journal-upload.conf.d/fleet.conf"
    chmod 0644 "$etc/journal-upload.conf.d/fleet.conf"
    install -D -m 0644 "$here/host/systemd-journal-upload.service.d/fleet.conf" \
        "$units/systemd-journal-upload.service.d/fleet.conf"
    reload
    echo "host installed: $keys/{ca.crt,upload.key,upload.crt}, uploads to $url"
    echo "start with: systemctl enable --now systemd-journal-upload"
}

uninstall() {
    if systemd_running; then
        systemctl disable --now journal-remote-vacuum.timer 2>/dev/null || true
    fi
    rm -f "$etc/journal-remote.conf.d/fleet.conf" "$etc/journal-upload.conf.d/fleet.conf" \
        "$units/systemd-journal-remote.service.d/fleet.conf" \
        "$units/systemd-journal-remote.socket.d/fleet.conf" \
        "$units/systemd-journal-remote.socket.d/fleet-allow.conf" \
        "$units/systemd-journal-upload.service.d/fleet.conf" \
        "$units/journal-remote-vacuum.service" "$units/journal-remote-vacuum.timer"
    reload
    echo "removed the fleet drop-ins (kept /var/log/journal/remote and $keys)"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    collector) collector "$@" ;;
    host) host "$@" ;;
    uninstall) uninstall "$@" ;;
    *) usage ;;
esac
