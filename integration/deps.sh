#!/usr/bin/env bash
# deps.sh builds the real parts the integration suite runs against — containerd,
# ctr, the runc shim and runc (with seccomp) — from the Go module proxy, plus two
# tiny OCI images (a static pause and a busybox-static rootfs), into a cache
# directory that is reused when present.
#
#   integration/deps.sh [CACHE_DIR]     (default: $HOTGPU_CACHE or ~/.cache/hotgpu)
#
# It prints the bin directory on its last line. The Debian packages it needs
# come from hack/host-deps.sh.
set -euo pipefail

CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.2}"
CACHE="${1:-${HOTGPU_CACHE:-$HOME/.cache/hotgpu}}"
BIN="$CACHE/bin/containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION"
IMAGES="$CACHE/images"
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { echo "deps: $*" >&2; }

build_containerd() {
	local mod="$CACHE/src/containerd-$CONTAINERD_VERSION"
	mkdir -p "$mod" "$BIN"
	(
		cd "$mod"
		[ -f go.mod ] || go mod init hotgpu.local/containerd-tools >/dev/null 2>&1
		local c="github.com/containerd/containerd/v2/cmd"
		go get "$c/containerd@$CONTAINERD_VERSION" "$c/ctr@$CONTAINERD_VERSION" \
			"$c/containerd-shim-runc-v2@$CONTAINERD_VERSION" 2>&1 | grep -v '^go: ' >&2 || true
		local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
		local tags="no_btrfs no_zfs no_devmapper no_aufs"
		for cmd in containerd ctr containerd-shim-runc-v2; do
			log "building $cmd $CONTAINERD_VERSION"
			CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ld" \
				-o "$BIN/$cmd.tmp" "github.com/containerd/containerd/v2/cmd/$cmd"
			mv "$BIN/$cmd.tmp" "$BIN/$cmd"
		done
	)
}

build_runc() {
	mkdir -p "$BIN"
	log "building runc $RUNC_VERSION (seccomp)"
	local gobin
	gobin="$(mktemp -d)"
	GOBIN="$gobin" CGO_ENABLED=1 go install -trimpath -tags seccomp \
		-ldflags "-s -w -X main.version=${RUNC_VERSION#v}" \
		"github.com/opencontainers/runc@$RUNC_VERSION"
	mv "$gobin/runc" "$BIN/runc"
	rmdir "$gobin"
}

build_images() {
	mkdir -p "$IMAGES"
	# Rebuild when imagetool, pause.c or the host's busybox change.
	local stamp
	stamp="$(cat "$HERE"/imagetool/*.go "$HERE"/imagetool/csrc/* /bin/busybox 2>/dev/null | sha256sum | cut -c1-16)"
	if [ "$(cat "$IMAGES/stamp" 2>/dev/null)" != "$stamp" ]; then
		rm -f "$IMAGES/pause.tar" "$IMAGES/busybox.tar" "$IMAGES/stamp"
	fi
	if [ ! -s "$IMAGES/pause.tar" ]; then
		log "building pause image"
		CGO_ENABLED=0 go run "$HERE/imagetool" -kind pause -ref hotgpu.local/pause:1 -out "$IMAGES/pause.tar.tmp"
		mv "$IMAGES/pause.tar.tmp" "$IMAGES/pause.tar"
	fi
	if [ ! -s "$IMAGES/busybox.tar" ]; then
		log "building busybox image"
		CGO_ENABLED=0 go run "$HERE/imagetool" -kind busybox -ref hotgpu.local/busybox:1 -out "$IMAGES/busybox.tar.tmp"
		mv "$IMAGES/busybox.tar.tmp" "$IMAGES/busybox.tar"
	fi
	echo "$stamp" >"$IMAGES/stamp"
}

"$HERE/../hack/host-deps.sh"
[ -x "$BIN/containerd" ] && [ -x "$BIN/ctr" ] && [ -x "$BIN/containerd-shim-runc-v2" ] || build_containerd
[ -x "$BIN/runc" ] || build_runc
build_images
echo "$BIN"
