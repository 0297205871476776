#!/usr/bin/env bash
# A private containerd with its CRI plugin, for the Kubernetes tests (tests/integration/
# kubernetes/): its own root, state, sockets and runc root under $CRI_DIR, never Docker's
# containerd nor /run/containerd. Idempotent: nothing is done when its socket answers. Called by
# scripts/setup-test.sh; the tests drive it through CRI from Python and emulate the kubelet.
#
#   $CRI_DIR/containerd.sock   the CRI socket (tests point the bridge's [kubernetes] at it)
#   $CRI_DIR/pods              the pod log directory the emulated kubelet writes
#   images (namespace k8s.io): bridge-test/busybox:latest, bridge-test/pause:latest, built from
#   the static /bin/busybox as OCI archives (no registry, nothing added to dockerd).
#
# Facts this relies on (shared/reference/kubernetes-nodes.md): pods with host networking need no
# CNI; these VMs refuse oom_score_adj -998, hence restrict_oom_score_adj; cgroup v1 + cgroupfs.
set -euo pipefail
CRI_DIR=${CRI_DIR:-/var/lib/journald-bridge-cri}
SOCK=$CRI_DIR/containerd.sock
say() { echo "setup-cri: $*"; }

for tool in containerd ctr runc containerd-shim-runc-v2; do
    command -v "$tool" >/dev/null || { say "$tool is missing (Debian 12: apt-get install containerd)"; exit 1; }
done
[ -x /bin/busybox ] || { say "/bin/busybox is missing (apt-get install busybox-static)"; exit 1; }

answers() { [ -S "$SOCK" ] && timeout 5 ctr -a "$SOCK" version >/dev/null 2>&1; }

mkdir -p "$CRI_DIR"/{root,state,opt,runc,net.d,pods}
if ! answers; then
    cat >"$CRI_DIR/config.toml" <<TOML
version = 2
root = "$CRI_DIR/root"
state = "$CRI_DIR/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CRI_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/bridge-test/pause:latest"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CRI_DIR/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$CRI_DIR/runc"
        SystemdCgroup = false
TOML
    say "starting a private containerd (socket $SOCK)"
    # setsid: it outlives this script and the test session, like dockerd does
    setsid containerd --config "$CRI_DIR/config.toml" >>"$CRI_DIR/containerd.log" 2>&1 </dev/null &
    echo $! >"$CRI_DIR/containerd.pid"
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    answers || { tail -20 "$CRI_DIR/containerd.log"; say "containerd did not come up"; exit 1; }
fi

# --- images: OCI archives of a root filesystem made of the static busybox ---------------------
have() {  # (grep -q would stop reading early: ctr's SIGPIPE fails the pipe under pipefail)
    local refs; refs=$(ctr -a "$SOCK" -n k8s.io images ls -q) || return 1
    grep -qx "docker.io/bridge-test/$1:latest" <<<"$refs"
}
build() {  # name, entrypoint JSON
    local out; out=$(mktemp -d)
    python3 - "$out" "$1" "$2" <<'PY'
import hashlib, io, json, os, subprocess, sys, tarfile
out, name, entry = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as tar:
    for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
        info = tarfile.TarInfo(d); info.type = tarfile.DIRTYPE; info.mode = 0o1777 if d == "tmp" else 0o755
        tar.addfile(info)
    tar.add("/bin/busybox", "bin/busybox")
    for a in applets:
        if a != "busybox":
            info = tarfile.TarInfo(f"bin/{a}"); info.type = tarfile.SYMTYPE; info.linkname = "busybox"
            tar.addfile(info)
raw = layer.getvalue()
blobs = {}
def blob(data, media):
    digest = hashlib.sha256(data).hexdigest(); blobs[digest] = data
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}
config = {"architecture": "amd64", "os": "linux",
          "config": {"Entrypoint": entry, "Env": ["PATH=/bin"]},
          "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [blob(raw, "application/vnd.oci.image.layer.v1.tar")]}
m = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
m["annotations"] = {"org.opencontainers.image.ref.name": "latest",
                    "io.containerd.image.name": f"docker.io/bridge-test/{name}:latest"}
with tarfile.open(os.path.join(out, "image.tar"), "w") as tar:
    def put(path, data):
        info = tarfile.TarInfo(path); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    put("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    put("index.json", json.dumps({"schemaVersion": 2, "manifests": [m]}).encode())
    for digest, data in blobs.items():
        put(f"blobs/sha256/{digest}", data)
PY
    ctr -a "$SOCK" -n k8s.io images import --index-name "docker.io/bridge-test/$1:latest" \
        "$out/image.tar" >/dev/null
    rm -rf "$out"
}
have busybox || { say "importing bridge-test/busybox"; build busybox '["/bin/sh"]'; }
have pause || { say "importing bridge-test/pause"; build pause '["/bin/sleep", "2147483647"]'; }
have busybox && have pause || { say "the test images could not be imported"; exit 1; }
