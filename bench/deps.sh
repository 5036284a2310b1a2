#!/usr/bin/env bash
# deps.sh builds the baselines `make bench` compares hotgpu against — NVIDIA's
# nvidia-ctk and nvidia-container-runtime (github.com/NVIDIA/nvidia-container-toolkit)
# — from the Go module proxy, through a tools module in the cache dir, so that
# their dependencies never enter hotgpu's go.mod. Reused when present.
#
#   bench/deps.sh [CACHE_DIR]     (default: $HOTGPU_CACHE or ~/.cache/hotgpu)
#
# It prints the bin directory on its last line. Needs go and gcc (go-nvml is cgo).
set -euo pipefail

TOOLKIT_VERSION="${TOOLKIT_VERSION:-v1.20.1}"
CACHE="${1:-${HOTGPU_CACHE:-$HOME/.cache/hotgpu}}"
BIN="$CACHE/bin/nvidia-container-toolkit-$TOOLKIT_VERSION"
MOD="$CACHE/src/nvidia-container-toolkit-$TOOLKIT_VERSION"
PKG="github.com/NVIDIA/nvidia-container-toolkit"
CMDS=(nvidia-ctk nvidia-container-runtime)

log() { echo "bench deps: $*" >&2; }

have_all() {
	for c in "${CMDS[@]}"; do [ -x "$BIN/$c" ] || return 1; done
}

build() {
	command -v gcc >/dev/null || { log "gcc is missing (go-nvml needs cgo): install it, e.g. apt-get install gcc libc6-dev"; exit 1; }
	mkdir -p "$MOD" "$BIN"
	cd "$MOD"
	[ -f go.mod ] || go mod init hotgpu.local/toolkit-tools >/dev/null 2>&1
	local targets=()
	for c in "${CMDS[@]}"; do targets+=("$PKG/cmd/$c@$TOOLKIT_VERSION"); done
	go get "${targets[@]}" 2>&1 | grep -v '^go: ' >&2 || true
	for c in "${CMDS[@]}"; do
		log "building $c $TOOLKIT_VERSION"
		CGO_CFLAGS="${CGO_CFLAGS:-} -Wno-deprecated-declarations" go build -trimpath -ldflags "-s -w -X $PKG/internal/info.version=${TOOLKIT_VERSION#v}" \
			-o "$BIN/$c.tmp" "$PKG/cmd/$c"
		mv "$BIN/$c.tmp" "$BIN/$c"
	done
}

have_all || build
echo "$BIN"
