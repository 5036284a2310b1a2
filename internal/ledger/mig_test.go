package ledger

import (
	"errors"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// mixedMIG is the simulated dgxa100 with MIG enabled on GPU 0 in mixed
// profiles (3g.20gb, 2g.10gb and two 1g.5gb) and GPU 1 whole.
func mixedMIG(t *testing.T) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Simulation().EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestMIGInstanceAndParentExcludeEachOther(t *testing.T) {
	inv := mixedMIG(t)
	parent, other := inv.GPUs[0], inv.GPUs[1]
	mig0, mig2, mig3 := parent.MIG[0].UUID, parent.MIG[2].UUID, parent.MIG[3].UUID
	tests := []struct {
		name     string
		first    string // held by podA
		second   string // wanted by podB
		wantHeld string // the device the refusal names as held; "" for granted
	}{
		{"instance held: parent busy", mig2, parent.UUID, mig2},
		{"parent held: instance busy", parent.UUID, mig0, parent.UUID},
		{"instance held: sibling instance free", mig2, mig3, ""},
		{"instance held: another GPU free", mig2, other.UUID, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLedger(t)
			l.SetOverlaps(inv.Overlapping)
			if err := l.Acquire(podA, Attach, Active, tt.first); err != nil {
				t.Fatal(err)
			}
			by := l.HeldBy(tt.second)
			err := l.Acquire(podB, Attach, Active, tt.second)
			if tt.wantHeld == "" {
				if err != nil || by != "" {
					t.Fatalf("Acquire(%s) = %v, HeldBy = %q; want it granted", tt.second, err, by)
				}
				return
			}
			var held *HeldError
			if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Via != tt.wantHeld || held.GPU != tt.second {
				t.Fatalf("Acquire(%s) = %v; want HeldError via %s", tt.second, err, tt.wantHeld)
			}
			if !strings.Contains(by, tt.wantHeld) || !strings.Contains(by, podA.String()) {
				t.Fatalf("HeldBy(%s) = %q; want it to name %s and %s", tt.second, by, tt.wantHeld, podA)
			}
			if _, ok := l.Lookup(tt.second); ok {
				t.Fatalf("refused %s was recorded", tt.second)
			}
		})
	}
}

func TestMIGInstanceAndParentSameHolder(t *testing.T) {
	inv := mixedMIG(t)
	l, _ := newLedger(t)
	l.SetOverlaps(inv.Overlapping)
	if err := l.Acquire(podA, Attach, Active, inv.GPUs[0].MIG[1].UUID); err != nil {
		t.Fatal(err)
	}
	// the container that holds the instance is the one holder the parent
	// is not refused to: the instance is already its
	if err := l.Acquire(podA, Attach, Active, inv.GPUs[0].UUID); err != nil {
		t.Fatalf("same holder: %v", err)
	}
}
