#!/usr/bin/env bash
# Packs the kubectl plugin as deploy/krew/lifeboat.yaml expects an archive: kubectl-lifeboat and
# LICENSE at its root. Usage: hack/krew-archive.sh BINARY OUT.tar.gz; prints the archive's sha256.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$1 out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/kubectl-lifeboat"
install -m 0644 "$repo/LICENSE" "$stage/LICENSE"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out" kubectl-lifeboat LICENSE
sha256sum "$out" | cut -d' ' -f1
