#!/usr/bin/env bash
# Lifeboat's main job on an embedded default, with no external cluster or cloud: start a local
# control plane (etcd + kube-apiserver + kube-controller-manager) and the Lifeboat operator, apply
# the playbook's policies, drill and restore request, and watch the operator turn them into
# CronJobs, on-demand backup Jobs and status; bad input is refused with a message that says what
# to fix. (Pods do not run yet: there is no node here.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mkdir -p target/demo
kubeconfig=$PWD/target/demo/kubeconfig
rm -f "$kubeconfig"
bash hack/testenv/build.sh >/dev/null
cargo build -q -p lifeboat-testenv --bin lifeboat-testenv -p lifeboat-operator --bin lifeboat-operator
source hack/testenv/versions.env
kubectl=${TEST_ASSET_KUBECTL:-$PWD/target/testenv/$KUBERNETES_VERSION/bin/kubectl}

./target/debug/lifeboat-testenv up --kubeconfig "$kubeconfig" > target/demo/control-plane.log 2>&1 &
cp_pid=$!
op_pid=
trap 'kill $op_pid $cp_pid 2>/dev/null; wait $op_pid $cp_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [ -s "$kubeconfig" ] && break
  kill -0 $cp_pid 2>/dev/null || { cat target/demo/control-plane.log; exit 1; }
  sleep 0.1
done
[ -s "$kubeconfig" ] || { echo "control plane did not start"; cat target/demo/control-plane.log; exit 1; }
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "== $(head -n1 target/demo/control-plane.log)"
echo "== Lifeboat's custom resources"
k api-resources --api-group=lifeboat.dev
echo
echo "== Starting the operator (log: target/demo/operator.log)"
KUBECONFIG=$kubeconfig ./target/debug/lifeboat-operator --metrics-addr 127.0.0.1:0 > target/demo/operator.log 2>&1 &
op_pid=$!
k create namespace shop >/dev/null
# The Secrets the examples reference (dummy values: nothing here connects to a real database).
for s in orders-db-backup sessions-redis staging-db-admin staging-redis; do
  k create secret generic "$s" -n shop --from-literal=password=demo >/dev/null
done
for s in shop-media-reader offsite-backup-writer; do
  k create secret generic "$s" -n shop --from-literal=AWS_ACCESS_KEY_ID=demo --from-literal=AWS_SECRET_ACCESS_KEY=demo >/dev/null 2>&1 || true
done
k create secret generic lifeboat-age-identity -n shop --from-literal=identity.txt=demo >/dev/null
k create secret generic slack-incident-webhook -n shop --from-literal=url=http://127.0.0.1:9/hook >/dev/null

echo "== Applying the playbook's backup table, quarterly drill and a restore of 'latest' into staging"
k apply --server-side -n shop -f deploy/examples/
for _ in $(seq 1 100); do
  [ "$(k get cronjobs -n shop --no-headers 2>/dev/null | wc -l)" -ge 4 ] && break
  sleep 0.2
done
echo
echo "== The operator made one CronJob per asset (hourly databases, daily storage and state)"
k get cronjobs -n shop
echo
echo "== An on-demand backup of shop-databases (annotation lifeboat.dev/backup-now)"
k annotate -n shop backuppolicy shop-databases lifeboat.dev/backup-now="demo-$(date +%s)" >/dev/null
sleep 2
k get jobs -n shop -l lifeboat.dev/role=backup
echo
sleep 1
echo "== kubectl get lifeboat -n shop"
k get lifeboat -n shop
echo
echo "== The restore request waits for a first good backup, and says so"
k get restorerequest orders-to-staging -n shop -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
echo
echo "== A six-field cron (the CloudNativePG foot-gun) and two asset kinds in one asset are refused:"
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
echo
echo "== Done. The operator and the control plane stop now; 'make testenv-up' keeps a control plane running."
