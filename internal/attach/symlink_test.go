package attach

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A container that swaps its GPU node for a symlink to a host file cannot
// keep the GPU that way: detach revokes it, leaves the symlink (not hotgpu's
// to remove) and the host file alone, and releases the GPU.
func TestDetachAfterNodeSwappedForSymlink(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	host := filepath.Join(t.TempDir(), "host-file")
	must(t, os.WriteFile(host, []byte("host data"), 0o600))
	before := s.devicesList()
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0)
	must(t, err)

	node := filepath.Join(s.root, "dev", "nvidia2")
	must(t, os.Remove(node))
	must(t, os.Symlink(host, node))
	if _, err := m.Detach(Target{ContainerID: "c0ffee1234567890"}, nil, false); err != nil {
		t.Fatalf("detach refused after the container swapped its node: %v", err)
	}
	if b, err := os.ReadFile(host); err != nil || string(b) != "host data" {
		t.Fatalf("host file touched: %q, %v", b, err)
	}
	if target, err := os.Readlink(node); err != nil || target != host {
		t.Errorf("the container's symlink was changed: %q, %v", target, err)
	}
	if after := s.devicesList(); after != before || strings.Contains(after, "195:2") {
		t.Errorf("devices.list after detach %q, want %q", after, before)
	}
	if len(l.Grants()) != 0 {
		t.Errorf("ledger after detach: %v", l.Grants())
	}
}
