#!/usr/bin/env bash
# vulncheck: run govulncheck (golang.org/x/vuln) over the module when its
# vulnerability database is reachable. Where it is not (air-gapped CI, our
# build machines: only the module proxy is reachable) it says so and exits 0;
# `make depcheck` is the check that does run there.
#
# GOVULNDB overrides the database (a mirror, or file:///path for an offline
# copy); GOVULNCHECK_VERSION pins the tool.
set -euo pipefail
cd "$(dirname "$0")/.."

db=${GOVULNDB:-https://vuln.go.dev}
errfile=$(mktemp)
trap 'rm -f "$errfile"' EXIT
version=${GOVULNCHECK_VERSION:-v1.9.0}

# skipped NOTE: say why nothing was checked, here and in $HOTGPU_SKIP_LOG,
# which `make check` lists at the end of its run.
skipped() {
	echo "vulncheck: SKIPPED: $1"
	if [ -n "${HOTGPU_SKIP_LOG:-}" ]; then echo "vulncheck: SKIPPED: $1" >>"$HOTGPU_SKIP_LOG"; fi
}

reachable() {
	case "$db" in
	file://*) [ -e "${db#file://}/index/db.json" ] || [ -e "${db#file://}/index/db.json.gz" ] ;;
	*) curl -fsS --max-time 5 -o /dev/null "$db/index/db.json.gz" 2>"$errfile" ;;
	esac
}

if ! command -v curl >/dev/null && [[ "$db" != file://* ]]; then
	skipped "curl is not installed, cannot probe $db"
	exit 0
fi
if ! reachable; then
	why=$(tr -d '\n' <"$errfile" 2>/dev/null || true)
	skipped "database unreachable: the Go vulnerability database $db is not reachable from here (${why:-no answer})."
	echo "vulncheck: run it where it is (GOVULNDB=file:///path/to/mirror works offline); make depcheck still checks patch levels."
	exit 0
fi
rm -f "$errfile"
echo "vulncheck: govulncheck $version against $db"
exec go run "golang.org/x/vuln/cmd/govulncheck@$version" -db "$db" ./...
