package gpu

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzLookup: GPU ids come from annotations, env, the API, CDI device names
// and kubelet. Lookup returns a GPU of the inventory that the id really
// names, or an error; it never panics and never returns a GPU for an id
// that is neither its index nor its UUID.
func FuzzLookup(f *testing.F) {
	inv := &Inventory{}
	for i := 0; i < 8; i++ {
		inv.GPUs = append(inv.GPUs, GPU{Index: i, Minor: i, UUID: "GPU-0000000" + strconv.Itoa(i) + "-aaaa-bbbb-cccc-dddddddddddd"})
	}
	for _, s := range []string{"0", "7", "8", "-1", "+1", " 3 ", "0x1", "GPU-00000003-aaaa-bbbb-cccc-dddddddddddd",
		"gpu-00000003-AAAA-bbbb-cccc-dddddddddddd", "", "all", "1:0", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		g, err := inv.Lookup(id)
		if err != nil {
			if g != nil {
				t.Fatalf("Lookup(%q) returned a GPU and an error", id)
			}
			return
		}
		if !inInventory(inv, g) {
			t.Fatalf("Lookup(%q) returned a GPU outside the inventory", id)
		}
		v := strings.TrimSpace(id)
		if n, err := strconv.Atoi(v); err == nil {
			if g.Index != n {
				t.Fatalf("Lookup(%q) = GPU %d", id, g.Index)
			}
			return
		}
		if !strings.EqualFold(g.UUID, v) {
			t.Fatalf("Lookup(%q) = %s", id, g.UUID)
		}
	})
}

func inInventory(inv *Inventory, g *GPU) bool {
	for i := range inv.GPUs {
		if &inv.GPUs[i] == g {
			return true
		}
	}
	return false
}
