package driver

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestResolveStaysInRoot(t *testing.T) {
	root := t.TempDir()
	for _, dir := range []string{"usr/lib/x86_64-linux-gnu", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"lib":                               "usr/lib",
		"usr/lib/x86_64-linux-gnu/abs":      "/usr/lib",
		"usr/lib/x86_64-linux-gnu/escape":   "../../../../../../etc",
		"usr/lib/x86_64-linux-gnu/loop":     "loop",
		"usr/lib/x86_64-linux-gnu/hostroot": "/",
	}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]string{
		"/lib/x86_64-linux-gnu":                      "/usr/lib/x86_64-linux-gnu",
		"/lib/x86_64-linux-gnu/abs/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
		"/usr/lib/x86_64-linux-gnu/escape":           "/etc",
		"/usr/lib/x86_64-linux-gnu/hostroot/etc":     "/etc",
		"/../../etc":                                 "/etc",
	}
	for in, want := range tests {
		if got, err := resolve(root, in); err != nil || got != want {
			t.Errorf("resolve(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := resolve(root, "/usr/lib/x86_64-linux-gnu/loop"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("loop: %v, want ELOOP", err)
	}
	if _, err := resolve(root, "/usr/lib/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v, want ErrNotExist", err)
	}
}
