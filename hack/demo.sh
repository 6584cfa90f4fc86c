#!/usr/bin/env bash
# Lifeboat's main job on an embedded default, with no external cluster or cloud: a local cluster
# (etcd, kube-apiserver, kube-controller-manager, plus a real node: containerd, kubelet,
# kube-scheduler), PostgreSQL and Redis with sample data, and an S3 server, all on this machine.
# Lifeboat is installed with its Helm chart; a backup and a disaster-recovery drill then run as
# real pods, and the achieved RPO and RTO are printed. Needs root (the node's containers).
#
# Run it with `make demo` (which builds what is missing first). Everything stops on exit;
# LIFEBOAT_DEMO_KEEP=1 keeps it running until Ctrl-C, with KUBECONFIG=target/demo/kubeconfig.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

if [[ $(id -u) != 0 ]]; then
  echo "demo: the local node runs containers and needs root; 'make demo-local' runs a drill without a cluster" >&2
  exit 1
fi

demo=$repo/target/demo
rm -rf "$demo"
mkdir -p "$demo"
kubeconfig=$demo/kubeconfig
source hack/testenv/versions.env
kubectl=${TEST_ASSET_KUBECTL:-$repo/target/testenv/$KUBERNETES_VERSION/bin/kubectl}
helm=$(bash hack/tools/helm.sh)
cargo build -q -p lifeboat-testenv --bin lifeboat-testenv -p kubectl-lifeboat --bin kubectl-lifeboat
export PATH=$repo/target/debug:$PATH # kubectl finds the kubectl-lifeboat plugin here
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
step() { printf '\n== %s\n' "$*"; }

pids=()
cleanup() {
  # SIGTERM: the cluster tears its node down (pods, mounts, cgroups, network) before it exits.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

step "Starting a local cluster with one node (log: target/demo/cluster.log)"
./target/debug/lifeboat-testenv up --node --no-crds --images target/node-images \
  --kubeconfig "$kubeconfig" >"$demo/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1200); do
  [[ -s $kubeconfig ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$demo/cluster.log"; exit 1; }
  sleep 0.1
done
[[ -s $kubeconfig ]] || { echo "the cluster did not start"; cat "$demo/cluster.log"; exit 1; }
export KUBECONFIG=$kubeconfig
k() { "$kubectl" "$@"; }
grep -E '^(control plane|node)' "$demo/cluster.log"
k get nodes
# The host's address on the pods' bridge: the servers listen there too, so agent pods reach them
# over the pod network and run under Pod Security "restricted" (no host network).
gw=$(sed -n 's/.*pods reach the host at \([0-9.]*\).*/\1/p' "$demo/cluster.log")
[[ -n $gw ]] || { echo "the node named no gateway"; cat "$demo/cluster.log"; exit 1; }

step "Starting PostgreSQL, Redis and an S3 server on loopback and the node's gateway $gw, with sample data"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
mkdir -p "$demo/pg" && chown postgres:postgres "$demo/pg"
as_postgres() { setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; }
as_postgres "$pgbin/initdb" -D "$demo/pg/data" -U lifeboat --auth=trust --no-sync --locale=C >/dev/null
echo "host all all ${gw%.*}.0/24 trust" >>"$demo/pg/data/pg_hba.conf" # the node's pods
pg_port=$(free_port)
# setpriv execs postgres: $! is the server itself, which the cleanup stops.
setpriv --reuid=postgres --regid=postgres --clear-groups -- "$pgbin/postgres" -D "$demo/pg/data" -p "$pg_port" -k "$demo/pg" \
  -c "listen_addresses=127.0.0.1,$gw" >"$demo/postgres.log" 2>&1 &
pids+=($!)
psql() { command psql -X -q -h 127.0.0.1 -p "$pg_port" -U lifeboat -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 1 100); do psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
psql -d postgres -c 'CREATE DATABASE shop'
psql -d shop -c "CREATE TABLE orders (id serial PRIMARY KEY, customer text, total numeric(10,2), placed_at timestamptz DEFAULT now());
  INSERT INTO orders (customer, total) SELECT 'customer-' || (i % 500), (i % 997) / 10.0 FROM generate_series(1, 20000) i;"
echo "PostgreSQL $gw:$pg_port, database shop: $(psql -d shop -Atc 'SELECT count(*) FROM orders') orders"

redis_port=$(free_port)
mkdir -p "$demo/redis"
# Without a password Redis serves only loopback unless protected mode is off.
redis-server --bind 127.0.0.1 "$gw" --protected-mode no --port "$redis_port" --dir "$demo/redis" \
  --save '' --daemonize no >"$demo/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" EVAL "for i=1,5000 do redis.call('SET','session:'..i,'user-'..i) end" 0 >/dev/null
echo "Redis $gw:$redis_port: $(redis-cli -p "$redis_port" DBSIZE) keys"

s3_port=$(free_port)
mkdir -p "$demo/s3/backups"
rclone serve s3 --addr "127.0.0.1:$s3_port" --addr "$gw:$s3_port" --auth-key demo-access-key,demo-secret-key \
  --config /dev/null "$demo/s3" >"$demo/s3.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break; sleep 0.1; done
echo "S3 http://$gw:$s3_port, bucket backups (files in target/demo/s3/backups)"

step "helm install lifeboat charts/lifeboat (CRDs, RBAC, the operator as a pod on the node)"
api_port=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
# The test API server listens on loopback only, where kube-proxy cannot send a pod (the node's
# service-proxy.py carries the agent pods' `kubernetes` Service): the operator uses the node's
# network and reaches the API server on loopback.
"$helm" install lifeboat charts/lifeboat --namespace lifeboat-system --create-namespace \
  --set replicaCount=1 --set hostNetwork=true --set logJson=false \
  --set metrics.port="$(free_port)" \
  --set 'extraEnv[0].name=KUBERNETES_SERVICE_HOST' --set 'extraEnv[0].value=127.0.0.1' \
  --set 'extraEnv[1].name=KUBERNETES_SERVICE_PORT' --set-string "extraEnv[1].value=$api_port" \
  --wait --timeout 3m | sed -n '1,6p'
k get pods -n lifeboat-system -o wide
# The chart made the master signing key (kept on upgrade and uninstall); each namespace's backups
# are signed with a key derived from it. In a real cluster, keep a copy outside it.
echo "master signing key: Secret $(k get secret lifeboat-signing-master-key -n lifeboat-system -o name)"

step "A BackupPolicy for PostgreSQL and Redis to S3, and a DrillSchedule (RTO 30m, RPO 15m)"
k create namespace shop >/dev/null
k label namespace shop pod-security.kubernetes.io/enforce=restricted >/dev/null
k create secret generic s3-creds -n shop --from-literal=AWS_ACCESS_KEY_ID=demo-access-key \
  --from-literal=AWS_SECRET_ACCESS_KEY=demo-secret-key >/dev/null
cat <<YAML | tee "$demo/shop.yaml" | k apply --server-side -n shop -f -
apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata:
  name: shop
spec:
  schedule: "*/10 * * * *"
  assets:
    - name: orders-db
      canary: true
      postgres: {host: $gw, port: $pg_port, user: lifeboat, sslMode: disable, databases: [shop]}
    - name: sessions
      redis: {host: $gw, port: $redis_port}
  retention: {keepLast: 7}
  destination:
    s3:
      endpoint: http://$gw:$s3_port
      bucket: backups
      prefix: lifeboat
      forcePathStyle: true
      credentialsSecret: {name: s3-creds}
  objectives: {rpo: 15m}
---
apiVersion: lifeboat.dev/v1alpha1
kind: DrillSchedule
metadata:
  name: quarterly
spec:
  schedule: "0 6 1 1,4,7,10 *"
  policy: shop
  assets: [orders-db]
  staging:
    targets:
      - asset: orders-db
        postgres: {host: $gw, port: $pg_port, user: lifeboat, sslMode: disable, database: shop_drill, createDatabase: true}
  validation:
    checks:
      - name: orders-restored
        sql: {asset: orders-db, query: "SELECT count(*) FROM orders", expect: "20000"}
  objectives: {rto: 30m, rpo: 15m}
YAML
for _ in $(seq 1 100); do
  [[ $(k get cronjobs -n shop --no-headers 2>/dev/null | wc -l) -ge 2 ]] && break
  sleep 0.2
done
k get cronjobs -n shop

step "kubectl lifeboat backup now shop --wait (one agent pod per asset)"
kubectl lifeboat backup now shop -n shop --wait --timeout 5m
k get pods -n shop -o wide -l lifeboat.dev/role=backup
echo
echo "In the bucket, under <namespace>/<policy>/ (each backup's metadata.json is signed and written last, after every checksum):"
(cd "$demo/s3/backups" && find . -type f | sort | sed 's|^\./|  s3://backups/|')

step "kubectl lifeboat logs backuppolicy/shop (the agent logs of those pods, found by the operator's labels)"
kubectl lifeboat logs backuppolicy/shop -n shop --tail 5 | tee "$demo/agent-logs.txt"
grep -q ' done ' "$demo/agent-logs.txt" # each run's outcome event, read through the kubelet

step "kubectl lifeboat backups shop (each asset's newest backup, from the policy's status)"
kubectl lifeboat backups shop -n shop

step "kubectl lifeboat status"
kubectl lifeboat status -n shop

step "kubectl lifeboat drill run quarterly --wait (the disaster now: restore the newest backup into shop_drill, SQL check)"
kubectl lifeboat drill run quarterly -n shop --wait --timeout 10m
echo "staging database shop_drill: $(psql -d shop_drill -Atc 'SELECT count(*) FROM orders') orders"

step "kubectl get lifeboat -n shop"
k get lifeboat -n shop

step "Bad input is refused at admission, with a message (a six-field cron, two kinds in one asset)"
cat <<'YAML' | k apply -n shop -f - 2>&1 | sed 's/^/   /' || true
apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {name: broken}
spec:
  schedule: "0 0 0 * * *"
  assets:
    - name: db
      postgres: {host: db, user: u, databases: [app]}
      redis: {host: cache}
  retention: {maxAge: 7d}
  destination: {volume: {claimName: backups}}
YAML

run=$(k get drillschedule quarterly -n shop -o jsonpath='{.status.lastRun.verdict} {.status.lastRun.rto} {.status.lastRun.rpo}')
read -r verdict rto rpo <<<"$run"
step "Drill $verdict: achieved RTO $rto (objective 30m), achieved RPO $rpo (objective 15m)"
kubectl lifeboat report -n shop --output-file "$demo/report.md"
echo "The recovery report: target/demo/report.md"

drill_id=$(k get drillschedule quarterly -n shop -o jsonpath='{.status.lastRun.id}')
canary=$(k get drillschedule quarterly -n shop -o jsonpath='{.status.lastRun.rpoCanarySeconds}')
step "The drill's evidence: written next to the backups by the Job $drill_id-evidence"
k wait --for=condition=complete "job/$drill_id-evidence" -n shop --timeout 2m >/dev/null
evidence="$demo/s3/backups/lifeboat/shop/shop/drill-$drill_id.json"
echo "s3://backups/lifeboat/shop/shop/drill-$drill_id.json ($(wc -c <"$evidence") bytes); canary RPO ${canary:-?}s (the backup's own marker read back from shop_drill)"
kubectl lifeboat report --evidence "$demo/s3/backups" --since 1d | sed -n '/## Summary/,/## Every drill/p' | sed '$d'

if [[ ${LIFEBOAT_DEMO_KEEP:-} == 1 ]]; then
  echo "Still running: export KUBECONFIG=$kubeconfig; Ctrl-C stops everything."
  wait "${pids[0]}"
fi
