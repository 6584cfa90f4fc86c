#!/usr/bin/env bash
# Builds the kstatus command (hack/tools/kstatus: sigs.k8s.io/cli-utils' status computation, the
# health Flux and cli-utils report) from its pinned, checksummed Go module into target/tools/,
# once; prints its path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
version=$(awk '$1 == "sigs.k8s.io/cli-utils" { print $2 }' "$repo/hack/tools/kstatus/go.mod")
out=$repo/target/tools/kstatus-$version
if [[ ! -x $out/kstatus ]]; then
  mkdir -p "$out"
  (cd "$repo/hack/tools/kstatus" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$out/kstatus.tmp" .) >&2
  mv "$out/kstatus.tmp" "$out/kstatus"
fi
echo "$out/kstatus"
