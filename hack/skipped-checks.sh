#!/usr/bin/env bash
# skipped-checks.sh: the last lines of `make check`. Lists, by name, every
# check that could not run ($HOTGPU_SKIP_LOG, written by vulncheck and
# depcheck -report), so a green run never hides one. Go tests need no list:
# under HOTGPU_TEST_STRICT=1 (CI) a test missing a prerequisite fails.
set -euo pipefail
log=${HOTGPU_SKIP_LOG:-}
if [ -n "$log" ] && [ -s "$log" ]; then
	echo
	echo "check: passed, but these checks did not run or warned:"
	sed 's/^/  - /' "$log"
else
	echo "check: passed; every check ran"
fi
if [ "${HOTGPU_TEST_STRICT:-}" = 1 ]; then
	echo "check: strict mode (HOTGPU_TEST_STRICT=1): no test skipped for a missing privilege, runtime or tool"
fi
