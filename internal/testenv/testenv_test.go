package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipFailsWhenStrict runs a child test that calls Skip, with and without
// strict mode, and checks the child skipped or failed accordingly.
func TestSkipFailsWhenStrict(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Skip(t, "a tool is missing")
		return
	}
	for _, tc := range []struct {
		name   string
		strict string
		fail   bool
	}{
		{"by hand", "", false},
		{"strict", "1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestSkipFailsWhenStrict$", "-test.v")
			cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", StrictEnv+"="+tc.strict)
			out, err := cmd.CombinedOutput()
			failed := err != nil
			if failed != tc.fail {
				t.Fatalf("child failed=%v, want %v:\n%s", failed, tc.fail, out)
			}
			if !strings.Contains(string(out), "a tool is missing") {
				t.Fatalf("child output does not give the reason:\n%s", out)
			}
			if !tc.fail && !strings.Contains(string(out), "--- SKIP") {
				t.Fatalf("child did not skip:\n%s", out)
			}
		})
	}
}
