#!/usr/bin/env bash
# A small CA for systemd-journal-upload -> systemd-journal-remote over HTTPS (openssl only).
#
#   fleet-ca.sh DIR init                          DIR/ca.key, DIR/ca.crt (the fleet's CA, 10 years)
#   fleet-ca.sh DIR collector NAME [SAN...]       DIR/NAME.key, DIR/NAME.crt: server certificate for
#                                                 the collector; SANs are DNS names or IP addresses
#                                                 (NAME is always one), e.g. logs.example.net 10.0.0.5
#   fleet-ca.sh DIR host NAME                     DIR/NAME.key, DIR/NAME.crt: client certificate for
#                                                 an uploading host
#
# Keep DIR/ca.key off the hosts (offline, or on the machine that issues certificates); hosts get
# ca.crt, their own NAME.key and NAME.crt. Certificates last DAYS days (default 825).
# Debian 12's systemd-journal-remote cannot check client certificates (built without --trust):
# the uploads are encrypted and the collector is authenticated, but the collector accepts any
# client that reaches its port. Restrict that port in the network (see README.md).
set -euo pipefail
umask 077

usage() { sed -n '2,9p' "$0" >&2; exit 64; }
[ $# -ge 2 ] || usage
dir=$1 cmd=$2
shift 2
days=${DAYS:-825}
mkdir -p "$dir"

issue() {  # issue NAME EXTENDED_KEY_USAGE SAN_LIST
    local name=$1 eku=$2 sans=$3 ext
    [ -s "$dir/ca.key" ] || { echo "fleet-ca: no $dir/ca.key: run '$0 $dir init' first" >&2; exit 1; }
    if [ -e "$dir/$name.crt" ]; then
        echo "fleet-ca: $dir/$name.crt exists; remove it to issue a new one" >&2; exit 1
    fi
    ext=$(mktemp)
    trap 'rm -f "$ext" "$dir/$name.csr"' RETURN
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$ext"
    printf 'extendedKeyUsage=%s\nsubjectAltName=%s\n' "$eku" "$sans" >>"$ext"
    openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    chmod 644 "$dir/$name.crt"
    echo "$dir/$name.key $dir/$name.crt"
}

san_list() {  # DNS:a,IP:1.2.3.4,...
    local out="" s
    for s in "$@"; do
        if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then out+="${out:+,}IP:$s"; else out+="${out:+,}DNS:$s"; fi
    done
    echo "$out"
}

case $cmd in
    init)
        if [ -e "$dir/ca.key" ]; then echo "fleet-ca: $dir/ca.key exists; keeping it" >&2; exit 0; fi
        openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key"
        openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=${CA_NAME:-journal fleet CA}" \
            -days 3650 -sha256 -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
        chmod 644 "$dir/ca.crt"
        echo "$dir/ca.key $dir/ca.crt"
        ;;
    collector)
        [ $# -ge 1 ] || usage
        name=$1
        issue "$name" serverAuth "$(san_list "$@")"
        ;;
    host)
        [ $# -eq 1 ] || usage
        issue "$1" clientAuth "$(san_list "$1")"
        ;;
    *) usage ;;
esac
