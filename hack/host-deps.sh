#!/usr/bin/env bash
# host-deps.sh installs the Debian packages building and testing hotgpu
# needs: gcc and libc6-dev (cgo: go-nvml), make and git (the Makefile),
# pkg-config and libseccomp-dev (runc with seccomp), busybox-static (the
# test image), debootstrap and systemd-container (the systemd suite boots a
# Debian root with systemd-nspawn). As root with apt-get it installs what is missing; otherwise
# it says what to install and fails.
set -euo pipefail

want=(gcc libc6-dev make git ca-certificates pkg-config libseccomp-dev busybox-static debootstrap systemd-container)
command -v dpkg-query >/dev/null || exit 0 # not Debian: the packages' names may differ
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "host-deps: missing packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "host-deps: installing ${missing[*]}" >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
