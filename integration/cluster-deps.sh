#!/usr/bin/env bash
# cluster-deps.sh builds a real single-node Kubernetes control plane from the
# Go module proxy into the integration cache, for the cluster suite
# (integration/cluster_test.go):
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#       the kubelet's version, built in kubelet-deps.sh's tools module (it
#       runs first and owns the staging-module replace lines), so the compiled
#       packages the kubelet shares with them are reused;
#   etcd (go.etcd.io/etcd/server/v3, kubeadm 1.34's version)
#       through a throwaway module: `go install` is refused (its go.mod has
#       replace directives);
#   CNI plugins ptp, host-local and loopback
#       the node needs a CNI config to become Ready, and kubelet's probes need
#       pod IPs the host reaches: ptp (a veth pair and a host route per pod)
#       gives both (`dummy` is missing from the kernel here; `tap` makes
#       pods Ready but unreachable).
#
#   integration/cluster-deps.sh [CACHE_DIR]  (default: $HOTGPU_CACHE or ~/.cache/hotgpu)
#
# ~10 min on 2 cores once (mostly kube-apiserver), then ~10 ms. Prints, one a
# line: the kubelet binary, the control-plane bin dir, the CNI bin dir.
# Needs: go.
set -euo pipefail

KUBE_VERSION="${KUBELET_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
CNI_VERSION="${CNI_VERSION:-v1.8.0}"
CACHE="${1:-${HOTGPU_CACHE:-$HOME/.cache/hotgpu}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$CACHE/bin/cluster-$KUBE_VERSION-etcd-$ETCD_VERSION"
CNIBIN="$CACHE/bin/cni-$CNI_VERSION"

log() { echo "cluster-deps: $*" >&2; }

build_kube() {
	local mod="$CACHE/src/kubelet-$KUBE_VERSION" # made by kubelet-deps.sh
	mkdir -p "$BIN"
	cd "$mod"
	local k="k8s.io/kubernetes/cmd"
	log "resolving control-plane modules"
	GOFLAGS=-mod=mod go get "$k/kube-apiserver@$KUBE_VERSION" "$k/kube-controller-manager@$KUBE_VERSION" \
		"$k/kube-scheduler@$KUBE_VERSION" "$k/kubectl@$KUBE_VERSION" 2>&1 | grep -v '^go: ' >&2 || true
	local minor="${KUBE_VERSION#v1.}"
	minor="${minor%%.*}"
	local ld="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	done
	for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
		[ -x "$BIN/$cmd" ] && continue
		log "building $cmd $KUBE_VERSION"
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$BIN/$cmd.tmp" "$k/$cmd"
		mv "$BIN/$cmd.tmp" "$BIN/$cmd"
	done
}

build_etcd() {
	local mod="$CACHE/src/etcd-$ETCD_VERSION"
	mkdir -p "$mod" "$BIN"
	cd "$mod"
	[ -f go.mod ] || go mod init hotgpu.local/etcd-tools >/dev/null 2>&1
	log "building etcd $ETCD_VERSION"
	GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>&1 | grep -v '^go: ' >&2 || true
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_cni() {
	local mod="$CACHE/src/cni-plugins-$CNI_VERSION"
	mkdir -p "$mod" "$CNIBIN"
	cd "$mod"
	[ -f go.mod ] || go mod init hotgpu.local/cni-tools >/dev/null 2>&1
	local p="github.com/containernetworking/plugins/plugins"
	local pkgs=("$p/main/ptp" "$p/ipam/host-local" "$p/main/loopback")
	log "building CNI plugins $CNI_VERSION (ptp, host-local, loopback)"
	GOFLAGS=-mod=mod go get "${pkgs[@]/%/@$CNI_VERSION}" 2>&1 | grep -v '^go: ' >&2 || true
	for pkg in "${pkgs[@]}"; do
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$CNIBIN/$(basename "$pkg").tmp" "$pkg"
		mv "$CNIBIN/$(basename "$pkg").tmp" "$CNIBIN/$(basename "$pkg")"
	done
}

KUBELET="$("$HERE/kubelet-deps.sh" "$CACHE" | tail -1)"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	[ -x "$BIN/$cmd" ] || { (build_kube); break; }
done
[ -x "$BIN/etcd" ] || (build_etcd)
[ -x "$CNIBIN/ptp" ] && [ -x "$CNIBIN/host-local" ] && [ -x "$CNIBIN/loopback" ] || (build_cni)
echo "$KUBELET"
echo "$BIN"
echo "$CNIBIN"
