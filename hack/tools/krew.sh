#!/usr/bin/env bash
# Builds krew's manifest validator (and krew itself, which the validator runs to install each
# platform) from the krew Go module into target/tools/, once; prints the validator's path. No
# binary is downloaded: this machine reaches the Go module proxy, not GitHub releases.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
KREW_VERSION=${KREW_VERSION:-v0.4.3}
out=$repo/target/tools/krew-$KREW_VERSION
for cmd in validate-krew-manifest krew; do
  if [[ ! -x $out/$cmd ]]; then
    mkdir -p "$out"
    GOBIN=$out GOFLAGS=-mod=mod go install "sigs.k8s.io/krew/cmd/$cmd@$KREW_VERSION" >&2
  fi
done
echo "$out/validate-krew-manifest"
