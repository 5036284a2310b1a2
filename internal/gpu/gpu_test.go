package gpu

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	inv := &Inventory{GPUs: []GPU{
		{Index: 0, Minor: 3, UUID: "GPU-aaaa"},
		{Index: 1, Minor: 0, UUID: "GPU-BBBB"},
	}}
	tests := []struct {
		id, wantUUID, wantErr string
	}{
		{"0", "GPU-aaaa", ""},
		{" 1 ", "GPU-BBBB", ""},
		{"gpu-bbbb", "GPU-BBBB", ""},
		{"2", "", "GPU 2 does not exist (this node has 2 GPUs, 0-1)"},
		{"GPU-cccc", "", `GPU "GPU-cccc" does not exist`},
		{"", "", "empty GPU id"},
	}
	for _, tt := range tests {
		g, err := inv.Lookup(tt.id)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Lookup(%q) err = %v, want %q", tt.id, err, tt.wantErr)
			}
			continue
		}
		if err != nil || g.UUID != tt.wantUUID {
			t.Errorf("Lookup(%q) = %v, %v", tt.id, g, err)
		}
	}
}

func TestNodeUsesMinorNotIndex(t *testing.T) {
	g := GPU{Index: 0, Minor: 3}
	n := g.Node()
	if n.Path != "/dev/nvidia3" || n.Major != NvidiaMajor || n.Minor != 3 || n.Rule() != "c 195:3 rwm" {
		t.Fatalf("node = %+v rule %q", n, n.Rule())
	}
}

func TestLookupAllRefusesOneGPUTwice(t *testing.T) {
	inv := &Inventory{GPUs: []GPU{{Index: 0, UUID: "GPU-aaaa"}, {Index: 1, UUID: "GPU-bbbb"}}}
	got, err := inv.LookupAll([]string{"1", "GPU-aaaa"})
	if err != nil || len(got) != 2 || got[0].Index != 1 || got[1].Index != 0 {
		t.Fatalf("LookupAll = %v, %v", got, err)
	}
	for _, ids := range [][]string{{"0", "GPU-aaaa"}, {"1", " 1"}, {"gpu-bbbb", "GPU-BBBB"}} {
		if _, err := inv.LookupAll(ids); err == nil || !strings.Contains(err.Error(), "named twice") {
			t.Errorf("LookupAll(%q) err = %v, want named twice", ids, err)
		}
	}
}
