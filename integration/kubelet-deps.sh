#!/usr/bin/env bash
# kubelet-deps.sh builds a real kubelet from the Go module proxy into the
# integration cache, for the device-plugin test (integration/kubelet_test.go).
#
#   integration/kubelet-deps.sh [CACHE_DIR]  (default: $HOTGPU_CACHE or ~/.cache/hotgpu)
#
# k8s.io/kubernetes is not meant to be used as a module: its go.mod requires
# every staging module (k8s.io/api, k8s.io/kubelet, ...) at v0.0.0 and
# replaces them with ./staging paths that do not exist in the module zip. A
# small tools module therefore requires k8s.io/kubernetes and replaces each
# staging module with its published v0.X.Y, the list generated from
# kubernetes' own go.mod so it cannot drift. ~4-6 min on 2 cores, once; then
# ~10 ms. It prints the kubelet binary's path on its last line. Needs: go.
set -euo pipefail

KUBELET_VERSION="${KUBELET_VERSION:-v1.34.4}"
CACHE="${1:-${HOTGPU_CACHE:-$HOME/.cache/hotgpu}}"
BIN="$CACHE/bin/kubelet-$KUBELET_VERSION"
STAGING_VERSION="v0.${KUBELET_VERSION#v1.}"

log() { echo "kubelet-deps: $*" >&2; }

build_kubelet() {
	local mod="$CACHE/src/kubelet-$KUBELET_VERSION"
	mkdir -p "$mod" "$BIN"
	cd "$mod"
	[ -f go.mod ] || go mod init hotgpu.local/kubelet-tools >/dev/null 2>&1
	log "fetching k8s.io/kubernetes $KUBELET_VERSION"
	GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBELET_VERSION" >kubernetes.json
	local kgomod
	kgomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' kubernetes.json)"
	[ -s "$kgomod" ] || { log "cannot find kubernetes' go.mod in the module cache"; exit 1; }
	# Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.Y.Z".
	local staging
	staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$kgomod")"
	[ -n "$staging" ] || { log "no staging replace lines in $kgomod"; exit 1; }
	local args=()
	for m in $staging; do args+=("-replace=$m=$m@$STAGING_VERSION"); done
	go mod edit "${args[@]}"
	go mod edit -require="k8s.io/kubernetes@$KUBELET_VERSION"
	log "resolving modules"
	GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kubelet@$KUBELET_VERSION" 2>&1 | grep -v '^go: ' >&2 || true
	log "building kubelet $KUBELET_VERSION"
	local minor="${KUBELET_VERSION#v1.}"
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBELET_VERSION"
	ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$BIN/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet
	mv "$BIN/kubelet.tmp" "$BIN/kubelet"
}

[ -x "$BIN/kubelet" ] || (build_kubelet)
echo "$BIN/kubelet"
