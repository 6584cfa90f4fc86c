#!/usr/bin/env bash
# Builds promtool from the Prometheus Go module (no binary downloads: this machine reaches the Go
# module proxy, not GitHub releases) into target/tools/, once; prints its path. Only ./cmd/promtool
# is built, not the server.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
out=$repo/target/tools/promtool-$PROMETHEUS_VERSION
if [[ ! -x $out/promtool ]]; then
  mkdir -p "$out"
  GOBIN=$out GOFLAGS=-mod=mod go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
fi
echo "$out/promtool"
