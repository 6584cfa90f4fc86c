#!/usr/bin/env bash
# Regenerates the wrapper Go modules in k8s/ and etcd/ after a version bump in versions.env.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod requires every staging module at v0.0.0
# and replaces them with ./staging paths. The wrapper requires it at the pinned version and
# replaces each staging module with its published v0.<minor>.<patch> twin; the list is derived
# from the published go.mod, never typed by hand. etcd's server module carries relative replace
# directives that only work inside its own repository, so it gets a wrapper too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

staging_version="v0.${KUBERNETES_VERSION#v1.}"
cd "$here/k8s"
modfile=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module lifeboat.dev/testenv/k8s"
  echo
  echo "go $(sed -n 's/^go \(.*\)$/\1/p' "$modfile")"
  grep -E '^godebug ' "$modfile" || true
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "replace ("
  grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$modfile" \
    | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
rm -f go.sum
go mod tidy

cd "$here/etcd"
printf 'module lifeboat.dev/testenv/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
rm -f go.sum
go mod tidy
echo "wrapper modules updated for Kubernetes $KUBERNETES_VERSION and etcd $ETCD_VERSION"
