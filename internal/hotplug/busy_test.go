package hotplug

import (
	"slices"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// The helper holds a node under a name of its own, by an open fd or by a
// mapping whose fd it closed; Holders finds it by device number. The scan
// is node-wide, so other processes of the machine may show up too: only
// the helper's presence is asserted.
func TestHolders(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		verb  string
		major int64
		minor int64
	}{
		{"open fd", "hold", 1, 7},        // /dev/full
		{"mmap then close", "map", 1, 5}, // /dev/zero, which can be mapped
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startChild(t)
			path, node := hostNode(t, t.TempDir(), tt.major, tt.minor)
			other := gpu.DeviceNode{Path: "/dev/port", Major: 1, Minor: 4}
			if got := holdersOf(t, node, other); slices.Contains(got[node], c.pid) {
				t.Fatalf("Holders before %s = %v; want no helper", tt.verb, got)
			}
			if r := c.do(t, tt.verb+" "+path); r != "ok" {
				t.Fatalf("%s: %s", tt.verb, r)
			}
			got := holdersOf(t, node, other)
			if !slices.Contains(got[node], c.pid) {
				t.Errorf("Holders while held by %s = %v; want helper pid %d", tt.verb, got, c.pid)
			}
			if slices.Contains(got[other], c.pid) {
				t.Errorf("Holders says the helper holds %v: %v", other, got)
			}
			if r := c.do(t, "close"); r != "ok" {
				t.Fatalf("close: %s", r)
			}
			if got := holdersOf(t, node); slices.Contains(got[node], c.pid) {
				t.Errorf("Holders after close = %v; want no helper", got)
			}
		})
	}
}

// A skipped pid is not reported even while it holds the node.
func TestHoldersSkip(t *testing.T) {
	requireRoot(t)
	c := startChild(t)
	path, node := hostNode(t, t.TempDir(), 1, 7)
	if r := c.do(t, "hold "+path); r != "ok" {
		t.Fatalf("hold: %s", r)
	}
	got, _, err := Holders([]gpu.DeviceNode{node}, c.pid)
	if err != nil || slices.Contains(got[node], c.pid) {
		t.Fatalf("Holders skipping %d = %v, %v", c.pid, got, err)
	}
}

func holdersOf(t *testing.T, nodes ...gpu.DeviceNode) map[gpu.DeviceNode][]int {
	t.Helper()
	got, _, err := Holders(nodes)
	if err != nil {
		t.Fatalf("Holders: %v", err)
	}
	return got
}
