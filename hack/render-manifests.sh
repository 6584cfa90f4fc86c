#!/usr/bin/env bash
# Renders the Helm chart into deploy/generated/lifeboat.yaml, the plain manifests behind
# `kubectl apply -k deploy/`: one source (the chart), two ways to install the same thing.
# A test re-renders and fails when the committed file drifts.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
helm=${HELM:-$(bash "$repo/hack/tools/helm.sh")}
out=${1:-$repo/deploy/generated/lifeboat.yaml}
mkdir -p "$(dirname "$out")"
{
  echo "# Rendered from charts/lifeboat by hack/render-manifests.sh (make manifests). Do not edit."
  # No master signing key: one committed here would be every install's. The platform team
  # creates it (docs/operations.md); the chart makes one itself.
  "$helm" template lifeboat "$repo/charts/lifeboat" --namespace lifeboat-system \
    --set signing.createMasterKey=false \
    | sed 's|app.kubernetes.io/managed-by: Helm|app.kubernetes.io/managed-by: kustomize|'
} > "$out"
echo "wrote $out"
