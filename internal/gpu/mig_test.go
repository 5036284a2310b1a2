package gpu

import (
	"slices"
	"strconv"
	"testing"
)

func migInventory() *Inventory {
	caps := func(a, b int64) []DeviceNode {
		return []DeviceNode{{Path: "/dev/nvidia-caps/nvidia-cap" + itoa(a), Major: 508, Minor: a}, {Path: "/dev/nvidia-caps/nvidia-cap" + itoa(b), Major: 508, Minor: b}}
	}
	return &Inventory{GPUs: []GPU{
		{Index: 0, Minor: 0, UUID: "GPU-0", MIGEnabled: true, MIG: []MIGDevice{
			{Parent: 0, Index: 0, GI: 1, CI: 0, UUID: "MIG-a", Profile: "3g.20gb", Caps: caps(12, 13)},
			{Parent: 0, Index: 1, GI: 7, CI: 0, UUID: "MIG-b", Profile: "1g.5gb", Caps: caps(75, 76)},
		}},
		{Index: 1, Minor: 1, UUID: "GPU-1"},
	}}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestLookupMIG(t *testing.T) {
	inv := migInventory()
	for _, id := range []string{"0:1", "MIG-b", "mig-B", " 0:1 "} {
		g, err := inv.Lookup(id)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", id, err)
		}
		if g.UUID != "MIG-b" || g.ParentUUID != "GPU-0" || g.ID() != "0:1" || g.Instance.Profile != "1g.5gb" || len(g.MIG) != 0 {
			t.Fatalf("Lookup(%q) = %+v, want MIG device 0:1", id, g)
		}
		if want := []string{"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap75", "/dev/nvidia-caps/nvidia-cap76"}; !slices.Equal(paths(g.Nodes()), want) {
			t.Fatalf("Nodes = %v, want %v", paths(g.Nodes()), want)
		}
	}
	for _, id := range []string{"0:2", "1:0", "MIG-c", ":1", "0:"} {
		if g, err := inv.Lookup(id); err == nil {
			t.Fatalf("Lookup(%q) = %+v, want an error", id, g)
		}
	}
	if g, ok := inv.ByUUID("MIG-a"); !ok || g.ID() != "0:0" {
		t.Fatalf("ByUUID(MIG-a) = %v, %v", g, ok)
	}
}

func TestLookupAllMIGOverlap(t *testing.T) {
	inv := migInventory()
	if _, err := inv.LookupAll([]string{"0:0", "0:1", "1"}); err != nil {
		t.Fatalf("two instances of one GPU and another GPU: %v", err)
	}
	for _, ids := range [][]string{{"0", "0:1"}, {"0:1", "GPU-0"}, {"0:1", "MIG-b"}} {
		if _, err := inv.LookupAll(ids); err == nil {
			t.Fatalf("LookupAll(%v): no error", ids)
		}
	}
}

func TestOverlapping(t *testing.T) {
	inv := migInventory()
	for uuid, want := range map[string][]string{"GPU-0": {"MIG-a", "MIG-b"}, "MIG-b": {"GPU-0"}, "GPU-1": {}, "GPU-9": nil} {
		if got := inv.Overlapping(uuid); !slices.Equal(got, want) {
			t.Errorf("Overlapping(%s) = %v, want %v", uuid, got, want)
		}
	}
	nodes := AppendNodes(nil, *mustLookup(t, inv, "0:0"))
	nodes = AppendNodes(nodes, *mustLookup(t, inv, "0:1"))
	if want := []string{"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13", "/dev/nvidia-caps/nvidia-cap75", "/dev/nvidia-caps/nvidia-cap76"}; !slices.Equal(paths(nodes), want) {
		t.Fatalf("AppendNodes = %v, want %v", paths(nodes), want)
	}
}

func mustLookup(t *testing.T, inv *Inventory, id string) *GPU {
	t.Helper()
	g, err := inv.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func paths(nodes []DeviceNode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Path
	}
	return out
}
