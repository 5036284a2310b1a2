#!/usr/bin/env bash
# Fails when `make generate` would change a checked-in file (deepcopy, CRD):
# regenerates into a copy of the tree's generated paths and compares.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(api/hotgpu deploy/crd)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
for p in "${paths[@]}"; do mkdir -p "$before/$p" && cp -a "$p/." "$before/$p/"; done
make -s generate >/dev/null
for p in "${paths[@]}"; do
	if ! diff -r "$before/$p" "$p" >/dev/null; then
		diff -r "$before/$p" "$p" || true
		echo "generated files are stale: run make generate and commit the result"
		exit 1
	fi
done
