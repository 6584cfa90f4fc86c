#!/usr/bin/env bash
# Fetches the CRDs Flux's helm-controller and source-controller ship (config/crd/bases of their Go
# modules, checksum-verified by the go command and pinned below) and prints the directory that
# holds them: HelmRelease, GitRepository, HelmRepository, OCIRepository, ...
set -euo pipefail
modules=(
  "github.com/fluxcd/helm-controller@v1.4.3 h1:449LcGJXLCylvrNCq8ycevwa5mxE1Mn9vxTwlsj/no8="
  "github.com/fluxcd/source-controller@v1.7.0 h1:/fBgS4CSmT5Jj/fjQDF92y+pC3gst1GJjgNSzY8Ff9I="
)
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$repo/target/tools/flux-crds
if [[ ! -s $out/helm.toolkit.fluxcd.io_helmreleases.yaml ]]; then
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  for entry in "${modules[@]}"; do
    read -r module sum <<<"$entry"
    info=$(cd "$out.tmp" && go mod download -json "$module")
    got=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$info")
    if [[ $got != "$sum" ]]; then
      echo "flux-crds: $module has sum $got, expected $sum" >&2
      exit 1
    fi
    dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$info")
    cp "$dir"/config/crd/bases/*.yaml "$out.tmp/"
  done
  chmod u+w "$out.tmp"/*.yaml
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out"
