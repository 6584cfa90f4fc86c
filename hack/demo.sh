#!/usr/bin/env bash
# Lifeboat's main job on an embedded default, with no external cluster or cloud: start a local
# control plane (etcd + kube-apiserver + kube-controller-manager), install the CRDs, apply the
# playbook's policies, drill and restore request, show how Kubernetes lists them, and show that
# bad input is refused at admission with a message that says what to fix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mkdir -p target/demo
kubeconfig=$PWD/target/demo/kubeconfig
rm -f "$kubeconfig"
bash hack/testenv/build.sh >/dev/null
cargo build -q -p lifeboat-testenv --bin lifeboat-testenv
source hack/testenv/versions.env
kubectl=${TEST_ASSET_KUBECTL:-$PWD/target/testenv/$KUBERNETES_VERSION/bin/kubectl}

./target/debug/lifeboat-testenv up --kubeconfig "$kubeconfig" > target/demo/control-plane.log 2>&1 &
cp_pid=$!
trap 'kill $cp_pid 2>/dev/null; wait $cp_pid 2>/dev/null || true' EXIT
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
echo "== Applying the playbook's backup table, quarterly drill and a restore of 'latest' into staging"
k create namespace shop >/dev/null
k apply --server-side -n shop -f deploy/examples/
echo
echo "== kubectl get lifeboat -n shop"
k get lifeboat -n shop
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
echo "== Done. The control plane stops now; 'make testenv-up' keeps one running."
