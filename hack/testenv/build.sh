#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from the
# wrapper Go modules in k8s/ and etcd/, in the spirit of controller-runtime's envtest: this
# project's machines have no container engine and cannot download release binaries. Go builds
# test infrastructure only; the product is Rust.
#
# Output: $LIFEBOAT_TESTENV_BIN (default <repo>/target/testenv/<k8s-version>/bin). Binaries already
# there are reused; GOCACHE/GOMODCACHE make a rebuild after `cargo clean` take about a minute.
# Extra tools (e.g. kube-scheduler, kubelet for a local node): LIFEBOAT_TESTENV_EXTRA_TOOLS.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

out=${LIFEBOAT_TESTENV_BIN:-$repo/target/testenv/$KUBERNETES_VERSION/bin}
read -r -a tools <<< "etcd kube-apiserver kube-controller-manager kubectl ${LIFEBOAT_TESTENV_EXTRA_TOOLS:-}"

missing=()
for t in "${tools[@]}"; do [ -x "$out/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "testenv: binaries present in $out"
  exit 0
fi
command -v go >/dev/null || { echo "testenv: Go is needed to build the control plane (missing: ${missing[*]})" >&2; exit 1; }
echo "testenv: building ${missing[*]} (Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION) into $out"
mkdir -p "$out"
# The wrapper modules are committed with their go.sum: builds are pinned and checksum-verified.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

for t in "${missing[@]}"; do
  start=$(date +%s)
  case "$t" in
    etcd) (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3) ;;
    *) (cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$out/$t.tmp" "k8s.io/kubernetes/cmd/$t") ;;
  esac
  # Renamed into place only when complete: an interrupted build never leaves a half binary.
  mv "$out/$t.tmp" "$out/$t"
  echo "testenv: built $t in $(( $(date +%s) - start ))s"
done
"$out/etcd" --version | sed -n 1p
"$out/kube-apiserver" --version
echo "testenv: done: $out"
