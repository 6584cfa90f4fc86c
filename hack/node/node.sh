#!/usr/bin/env bash
# One Kubernetes node on this machine, joined to a running control plane: containerd (Debian's,
# with its CRI plugin, runc and a bridge CNI network), kube-scheduler, kubelet, kube-proxy
# (iptables mode) and cluster DNS (CoreDNS, on the pods' gateway), all in one scratch directory. It runs until its standard input closes (the parent that started it went
# away, however it ended) or it receives SIGINT/SIGTERM, then tears everything down: pods, shims,
# mounts, cgroups, the bridge and the directory. Test infrastructure only.
#
#   node.sh --server https://127.0.0.1:PORT --ca CA.crt \
#           --node-token TOKEN --scheduler-token TOKEN [--dir DIR] [--images DIR] [--name NAME]
#
# Prints "node: gateway <address>" once the pods' bridge is up (servers the pods should reach
# listen there: it is the host's address on a host-only network) and "node: ready <name> <dir>"
# once the kubelet has registered the Node and it is Ready.
# What it changes outside DIR, and undoes: a cgroup /lifeboat-node-<id> in each hierarchy, a bridge
# lbn<id> with 10.244.<n>.1/24 and the `kubernetes` Service address, shim sockets in
# /run/containerd/s, and kube-proxy's iptables chains (KUBE-*, removed with `kube-proxy --cleanup`:
# the chains are the host's, so two nodes must not run on one machine at the same time; one after
# the other is fine). The kubelet runs in a mount
# namespace of its own where the kernel tunables it insists on (vm.overcommit_memory=1,
# kernel.panic_on_oops=1, ...) read as already set, so the host's values are never changed; and
# without iptables on its PATH, so it installs no firewall chains on the host.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=hack/testenv/versions.env
source "$repo/hack/testenv/versions.env"
bin=${LIFEBOAT_TESTENV_BIN:-$repo/target/testenv/$KUBERNETES_VERSION/bin}

server="" ca="" node_token="" scheduler_token="" dir="" images="" name="lifeboat-node"
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --ca) ca=$2; shift 2 ;;
    --node-token) node_token=$2; shift 2 ;;
    --scheduler-token) scheduler_token=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    *) echo "node: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$server" ] || [ -z "$ca" ] || [ -z "$node_token" ] || [ -z "$scheduler_token" ]; then
  echo "node: --server, --ca, --node-token and --scheduler-token are required" >&2
  exit 2
fi
for t in kubelet kube-scheduler kube-proxy coredns crictl pause; do
  [ -x "$bin/$t" ] || { echo "node: $bin/$t missing: run hack/node/build.sh" >&2; exit 1; }
done
[ -n "$dir" ] || dir=$(mktemp -d /tmp/lifeboat-node-XXXXXX)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# An id for what lives outside $dir; the subnet's third octet comes from it too.
id=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
octet=$(( id % 250 + 1 ))
bridge=lbn$id
cgroot=/lifeboat-node-$id
t0=$(date +%s%N)
log() { echo "node: [$(( ($(date +%s%N) - t0) / 1000000 ))ms] $*" >&2; }

mkdir -p "$dir"/{containerd,state,runc,opt,cni/net.d,cni/ipam,kubelet,pod-logs,sysctl}

# ---------------------------------------------------------------- teardown (always runs once) --
pids=()
torn_down=0
proxy_started=0
teardown() {
  [ "$torn_down" = 1 ] && return
  torn_down=1
  trap '' INT TERM
  log "tearing down"
  # The scheduler first, then the kubelet, so nothing restarts what is being removed.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local p=${pids[i]} name
    name=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    [ "$name" = containerd ] && continue
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # kube-proxy's chains go with it (it removes them itself only when asked to); its --cleanup
  # leaves the (empty) KUBE-FIREWALL chain it made and the jumps to it.
  if [ "$proxy_started" = 1 ]; then
    PATH=/usr/sbin:/usr/bin:/sbin:/bin timeout 30 "$bin/kube-proxy" --cleanup >>"$dir/kube-proxy.log" 2>&1 || true
    local ipt PATH=/usr/sbin:/usr/bin:/sbin:/bin
    for ipt in iptables ip6tables; do
      while "$ipt" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
      while "$ipt" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
      "$ipt" -F KUBE-FIREWALL 2>/dev/null && "$ipt" -X KUBE-FIREWALL 2>/dev/null || true
    done
  fi
  # Pods through the CRI while containerd still runs: sandboxes stop, CNI releases the network.
  if [ -S "$dir/containerd.sock" ]; then
    timeout 60 "$bin/crictl" --timeout 30s -r "unix://$dir/containerd.sock" rmp -f -a >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/containerd.pid" ]; then
    local cpid
    cpid=$(cat "$dir/containerd.pid")
    kill -TERM "$cpid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$cpid" 2>/dev/null || true
  fi
  # Whatever survived: shims of this containerd (named by its socket) and processes in our cgroups.
  pkill -KILL -f -- "-address $dir/containerd.sock" 2>/dev/null || true
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$cgroot" ] || continue
    # shellcheck disable=SC2038 # the files hold PIDs, not names
    find "$h$cgroot" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 0.2
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$cgroot" ] || continue
    find "$h$cgroot" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Mounts under $dir (overlay snapshots, pod volumes, the shared kubelet root, sandbox shm),
  # deepest first; and network namespaces CNI made for this node's pods.
  local m
  for _ in 1 2 3; do
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
  ip link del "$bridge" 2>/dev/null || true
  if [ -n "${LIFEBOAT_NODE_KEEP_LOGS:-}" ]; then
    mkdir -p "$LIFEBOAT_NODE_KEEP_LOGS"
    cp "$dir"/*.log "$LIFEBOAT_NODE_KEEP_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$dir"
  log "down"
}
trap 'teardown; exit 0' INT TERM
trap 'teardown' EXIT

wait_for() { # wait_for SECONDS WHAT COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "node: a process exited while waiting for $what" >&2; tail -n 30 "$dir"/*.log >&2; return 1; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || { echo "node: timed out waiting for $what" >&2; tail -n 30 "$dir"/*.log >&2; return 1; }
    sleep 0.1
  done
}

# ------------------------------------------------------------------------------------- network --
# The pods' bridge exists before any pod, with a fixed gateway address: the host's end of a
# network only this node's pods are on (nothing is forwarded or masqueraded beyond it), where the
# servers the tests and the demo start listen besides loopback. The CNI bridge plugin finds it
# and uses it as it is.
gateway=10.244.$octet.1
ip link add "$bridge" type bridge
ip addr add "$gateway/24" dev "$bridge"
ip link set "$bridge" up
log "bridge $bridge, gateway $gateway"
echo "node: gateway $gateway"

# ------------------------------------------------------------------------------- containerd --
cat > "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "lifeboat.local/pause:1"
  # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which this machine withholds even
  # from root: without this, runc fails every sandbox ("failed to update /proc/self/oom_score_adj:
  # Permission denied", seen as "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
cat > "$dir/cni/net.d/10-lifeboat.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lifeboat",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$octet.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
# Each daemon in a session of its own: a Ctrl-C meant for this script must not kill containerd
# before the teardown has stopped the pods through it.
setsid containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 </dev/null &
pids+=($!)
echo $! >"$dir/containerd.pid"
wait_for 30 containerd ctr --address "$dir/containerd.sock" version
log "containerd up ($(containerd --version | cut -d' ' -f3))"

# ------------------------------------------------------------------------------------ images --
pause_tar="$dir/pause.tar"
python3 "$here/oci-image.py" --name lifeboat.local/pause:1 --out "$pause_tar" \
  --file "$bin/pause:/pause" --entrypoint /pause --user 65535:65535 >/dev/null
tars=("$pause_tar")
if [ -n "$images" ]; then
  for t in "$images"/*.tar; do [ -f "$t" ] && tars+=("$t"); done
fi
for t in "${tars[@]}"; do
  ctr --address "$dir/containerd.sock" -n k8s.io images import --no-unpack "$t" >/dev/null
done
log "imported ${#tars[@]} image(s)"

# ------------------------------------------------------------------------------------ kubelet --
for h in /sys/fs/cgroup/*/; do
  [ -f "${h}cgroup.procs" ] && mkdir -p "$h$cgroot"
done
write_kubeconfig() { # write_kubeconfig FILE TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: user
  user: {token: "$2"}
contexts:
- name: local
  context: {cluster: local, user: user}
current-context: local
EOF
}
write_kubeconfig "$dir/kubelet.kubeconfig" "$node_token"
write_kubeconfig "$dir/scheduler.kubeconfig" "$scheduler_token"

# The Node's address, what the API server dials for logs and exec: kubelets refuse a loopback one.
node_ip=${LIFEBOAT_NODE_IP:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
[ -n "$node_ip" ] || { echo "node: no IPv4 default route to take the node's address from; set LIFEBOAT_NODE_IP" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kubelet_port=$(free_port)
cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# As on a real node: callers authenticate with a client certificate of the cluster's CA (the API
# server's, for logs and exec) or a token the API server reviews, and the API server authorizes.
address: $node_ip
port: $kubelet_port
healthzPort: 0
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$ca"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
# This machine has cgroup v1 (hybrid); Kubernetes 1.35 turns this default to true.
failCgroupV1: false
failSwapOn: false
podLogsDir: $dir/pod-logs
staticPodPath: ""
resolvConf: /etc/resolv.conf
# Cluster DNS (CoreDNS, below) on the host's end of the pod network, as NodeLocal DNSCache serves
# on a node-local address: pods resolve <service>.<namespace>.svc.
clusterDNS: [$gateway]
clusterDomain: cluster.local
serializeImagePulls: false
# A shared development machine: its disk may be fuller than the defaults tolerate, and the imported
# images cannot be pulled again if garbage-collected.
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%, imagefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Status reported promptly: tests wait on it.
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
fileCheckFrequency: 20s
EOF
# The kubelet's root is a shared mount, so the volumes the kubelet mounts from its own mount
# namespace appear in the host's, where runc looks for them.
mount --bind "$dir/kubelet" "$dir/kubelet"
mount --make-rshared "$dir/kubelet"
# The values the kubelet would otherwise write into the host's kernel (setupKernelTunables).
sysctls="vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000"
masks=""
for kv in $sysctls; do
  k=${kv%%=*} v=${kv#*=}
  f="$dir/sysctl/${k//\//.}"
  echo "$v" >"$f"
  masks+="mount --bind $f /proc/sys/$k; "
done
PATH=/usr/local/bin:/usr/bin setsid unshare --mount --propagation unchanged -- sh -c "$masks exec \"\$@\"" kubelet \
  "$bin/kubelet" \
  --config="$dir/kubelet.yaml" \
  --kubeconfig="$dir/kubelet.kubeconfig" \
  --root-dir="$dir/kubelet" \
  --cert-dir="$dir/kubelet/pki" \
  --hostname-override="$name" \
  --node-ip="$node_ip" \
  --v="${LIFEBOAT_NODE_KUBELET_V:-1}" \
  >"$dir/kubelet.log" 2>&1 </dev/null &
pids+=($!)

# ----------------------------------------------------------------------------- kube-scheduler --
setsid "$bin/kube-scheduler" \
  --kubeconfig="$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
  --leader-elect=false \
  --secure-port=0 \
  --v=1 \
  >"$dir/kube-scheduler.log" 2>&1 </dev/null &
pids+=($!)

# -------------------------------------------------------------------------------- kube-proxy --
# Services for the pods, as kube-proxy programs them on any node: iptables NAT rules from the
# Services and EndpointSlices it watches (as the node: the `system:node-proxier` role). Nothing it
# would change host-wide: conntrack limits and timeouts left as they are (0), no localhost
# NodePorts (they would set net.ipv4.conf.all.route_localnet), no OOM score below 0 (this machine
# withholds CAP_SYS_RESOURCE), health and metrics servers off (fixed ports).
PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid "$bin/kube-proxy" \
  --kubeconfig="$dir/kubelet.kubeconfig" \
  --hostname-override="$name" \
  --proxy-mode=iptables \
  --cluster-cidr="10.244.$octet.0/24" \
  --conntrack-max-per-core=0 \
  --conntrack-tcp-timeout-established=0 \
  --conntrack-tcp-timeout-close-wait=0 \
  --iptables-localhost-nodeports=false \
  --nodeport-addresses=primary \
  --oom-score-adj=0 \
  --healthz-bind-address="" \
  --metrics-bind-address="" \
  --v=2 \
  >"$dir/kube-proxy.log" 2>&1 </dev/null &
pids+=($!)
proxy_started=1

# ------------------------------------------------------------------------------- cluster DNS --
# CoreDNS serving cluster.local from the API (its kubernetes plugin, as the node), everything else
# forwarded to this machine's resolvers; bound to the gateway, so each node has its own.
cat > "$dir/Corefile" <<EOF
.:53 {
    bind $gateway
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $dir/kubelet.kubeconfig local
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
}
EOF
setsid "$bin/coredns" -conf "$dir/Corefile" >"$dir/coredns.log" 2>&1 </dev/null &
pids+=($!)

# ------------------------------------------------------------------- the kubernetes Service --
# Pods reach the API server at the `kubernetes` Service address, which kube-proxy would translate
# to the API server's endpoint; this one listens on loopback only and has none (a loopback
# endpoint is invalid). kube-proxy's reject rule for a Service without endpoints sits in the
# forward and output paths, not in the input path of a local address. As kube-proxy's IPVS mode does,
# the Service address is put on a local interface (the bridge), and a proxy bound to that bridge
# alone forwards its port to the API server (kube-proxy's original user-space mode).
kctl() { KUBECONFIG="$dir/kubelet.kubeconfig" "$bin/kubectl" "$@"; }
svc_ip="" svc_port=""
for _ in $(seq 100); do
  read -r svc_ip svc_port < <(kctl get service kubernetes -n default \
    -o jsonpath='{.spec.clusterIP} {.spec.ports[0].port}{"\n"}' 2>/dev/null) || true
  [ -n "$svc_ip" ] && break
  sleep 0.1
done
[ -n "$svc_ip" ] || { echo "node: no kubernetes Service to route" >&2; exit 1; }
api=${server#https://}
ip addr add "$svc_ip/32" dev "$bridge"
setsid python3 "$here/service-proxy.py" --device "$bridge" --listen "$svc_ip:$svc_port" \
  --to "$api" >"$dir/service-proxy.log" 2>&1 </dev/null &
pids+=($!)
wait_for 10 "the Service proxy" grep -q listening "$dir/service-proxy.log"
log "kubernetes Service $svc_ip:$svc_port -> $api"
wait_for 60 "kube-proxy's first sync" grep -q "SyncProxyRules complete" "$dir/kube-proxy.log"
wait_for 60 "CoreDNS" grep -q "^CoreDNS-" "$dir/coredns.log"
log "kube-proxy synced; CoreDNS on $gateway:53"

node_ready() {
  kctl get node "$name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}
wait_for "${LIFEBOAT_NODE_START_TIMEOUT:-120}" "Node $name Ready" node_ready
log "node $name Ready (kubelet on $node_ip:$kubelet_port, logs in $dir)"
echo "node: ready $name $dir"

# Runs until the parent closes our standard input, or a signal arrives.
while read -r _; do :; done
teardown
