#!/usr/bin/env bash
# Builds helm from its Go module (no binary downloads: this machine reaches the Go module proxy,
# not GitHub releases) into target/tools/, once; prints its path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
HELM_VERSION=${HELM_VERSION:-v4.3.1}
out=$repo/target/tools/helm-$HELM_VERSION
if [[ ! -x $out/helm ]]; then
  mkdir -p "$out"
  GOBIN=$out GOFLAGS=-mod=mod go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
fi
echo "$out/helm"
