package hotplug

import (
	"os"
	"slices"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// The helper holds a node open under a name of its own; OpenBy finds it by
// device number (1:7, /dev/full, which this test process never opens).
func TestOpenBy(t *testing.T) {
	requireRoot(t)
	c := startChild(t)
	path, _ := hostNode(t, t.TempDir(), 1, 7)
	full := gpu.DeviceNode{Path: "/dev/full", Major: 1, Minor: 7}
	pids := []int{os.Getpid(), c.pid, 1 << 30} // the last one does not exist

	if got, err := OpenBy(pids, full); err != nil || len(got) != 0 {
		t.Fatalf("OpenBy before hold = %v, %v; want none", got, err)
	}
	if r := c.do(t, "hold "+path); r != "ok" {
		t.Fatalf("hold: %s", r)
	}
	if got, err := OpenBy(pids, full); err != nil || !slices.Equal(got, []int{c.pid}) {
		t.Errorf("OpenBy while held = %v, %v; want [%d]", got, err, c.pid)
	}
	if got, err := OpenBy(pids, gpu.DeviceNode{Path: "/dev/port", Major: 1, Minor: 4}); err != nil || len(got) != 0 {
		t.Errorf("OpenBy of another device = %v, %v", got, err)
	}
	if r := c.do(t, "close"); r != "ok" {
		t.Fatalf("close: %s", r)
	}
	if got, err := OpenBy(pids, full); err != nil || len(got) != 0 {
		t.Errorf("OpenBy after close = %v, %v; want none", got, err)
	}
}
