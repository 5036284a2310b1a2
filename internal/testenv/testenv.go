// Package testenv decides what a test does when something it needs is
// missing: root, a cgroup hierarchy, a runtime, a tool. Run by hand, the test
// skips with the reason. Under HOTGPU_TEST_STRICT=1 (CI sets it) it fails
// instead, so a proof that did not run can never pass as green.
//
// Deliberate skips (-short, a case covered elsewhere) are not for this
// package: they use t.Skip directly.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// StrictEnv is the variable that turns missing-prerequisite skips into failures.
const StrictEnv = "HOTGPU_TEST_STRICT"

// Strict reports whether missing prerequisites fail tests.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Skip skips t for a missing prerequisite, or fails it in strict mode.
func Skip(t testing.TB, args ...any) {
	t.Helper()
	Skipf(t, "%s", fmt.Sprint(args...))
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s=1: a prerequisite is missing, so this proof cannot run: %s", StrictEnv, msg)
	}
	t.Skip(msg)
}

// RequireRoot skips (or fails in strict mode) when not running as root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skipf(t, "needs root: %s", why)
	}
}

// LookPath returns the path of the tool name, or skips (fails in strict
// mode) saying how to install it.
func LookPath(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skipf(t, "needs %s (%s)", name, install)
	}
	return p
}
