#!/usr/bin/env bash
# systemd-root.sh makes the root the systemd suite boots with systemd-nspawn:
# a minimal Debian bookworm with systemd and dbus (debootstrap, ~40-90 s),
# cached and reused when present. It prints the root's path on its last line.
#
#   integration/systemd-root.sh [CACHE_DIR]   (default: $HOTGPU_CACHE or ~/.cache/hotgpu)
#
# Needs root and the Debian packages debootstrap and systemd-container
# (hack/host-deps.sh installs them); without them it prints nothing.
set -euo pipefail

CACHE="${1:-${HOTGPU_CACHE:-$HOME/.cache/hotgpu}}"
ROOT="$CACHE/systemd-bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ ! -x "$ROOT/lib/systemd/systemd" ]; then
	# Without root or debootstrap there is no root to make; the systemd
	# suite then says so (it needs root anyway).
	[ "$(id -u)" -eq 0 ] || { echo "systemd-root: not root: $ROOT not made" >&2; exit 0; }
	command -v debootstrap >/dev/null || { echo "systemd-root: no debootstrap (hack/host-deps.sh): $ROOT not made" >&2; exit 0; }
	partial="$CACHE/partial/systemd-bookworm.$$"
	rm -rf "$partial"
	mkdir -p "$CACHE/partial"
	echo "systemd-root: debootstrap bookworm into $ROOT" >&2
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$partial" "$MIRROR" >&2
	rm -rf "$ROOT"
	mv "$partial" "$ROOT"
fi
echo "$ROOT"
