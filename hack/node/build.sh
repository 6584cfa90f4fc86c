#!/usr/bin/env bash
# Provides what the local node needs besides the control plane: Debian's containerd, runc and CNI
# plugins (apt, when missing), kube-scheduler, kubelet and kube-proxy (hack/testenv/build.sh, the
# same pinned Kubernetes Go modules), CoreDNS (its Go module; the pods' cluster DNS), crictl (its Go module; the node's teardown drives the CRI with it) and a
# static pause binary for the sandbox image (hack/node/pause.c). Idempotent: present tools are kept.
#
# Output: $LIFEBOAT_TESTENV_BIN (default <repo>/target/testenv/<k8s-version>/bin), next to the
# control-plane binaries.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=hack/testenv/versions.env
source "$repo/hack/testenv/versions.env"
# shellcheck source=hack/node/versions.env
source "$here/versions.env"
out=${LIFEBOAT_TESTENV_BIN:-$repo/target/testenv/$KUBERNETES_VERSION/bin}

need_apt=()
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
# kube-proxy's iptables mode runs iptables-restore.
command -v iptables-restore >/dev/null || need_apt+=(iptables)
# pause is linked statically: gcc and glibc's static library.
if ! command -v gcc >/dev/null || [ ! -f "$(gcc -print-file-name=libc.a)" ]; then need_apt+=(gcc libc6-dev); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "node: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The node starts a containerd of its own (own root, state and socket); a distribution service
  # that may be running is left alone.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

LIFEBOAT_TESTENV_BIN=$out LIFEBOAT_TESTENV_EXTRA_TOOLS="kube-scheduler kubelet kube-proxy" bash "$repo/hack/testenv/build.sh"

if [ ! -x "$out/crictl" ]; then
  start=$(date +%s)
  GOBIN=$(mktemp -d)
  CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=$GOBIN go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  mv "$GOBIN/crictl" "$out/crictl"
  rmdir "$GOBIN"
  echo "node: built crictl $CRICTL_VERSION in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$out/coredns" ]; then
  start=$(date +%s)
  GOBIN=$(mktemp -d)
  # No replace directives in its go.mod, so `go install module@version` builds it as released.
  CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=$GOBIN go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$GOBIN/coredns" "$out/coredns"
  rmdir "$GOBIN"
  echo "node: built coredns $COREDNS_VERSION in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$out/pause" ] || [ "$here/pause.c" -nt "$out/pause" ]; then
  gcc -Os -s -static -o "$out/pause.tmp" "$here/pause.c"
  mv "$out/pause.tmp" "$out/pause"
  echo "node: built pause"
fi
echo "node: $(containerd --version | cut -d' ' -f3), $(runc --version | sed -n 1p), $("$out/kubelet" --version), $("$out/crictl" --version), $("$out/coredns" -version | sed -n 1p)"
