package alloc

import (
	"errors"
	"slices"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// mixedMIG is the simulated dgxa100 with GPU 0 in MIG mode in mixed
// profiles (0:0 3g.20gb, 0:1 2g.10gb, 0:2 and 0:3 1g.5gb) and GPU 1 in
// MIG mode with two 1g.5gb (1:0, 1:1).
func mixedMIG(t *testing.T) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sim := p.Simulation()
	if err := sim.EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	if err := sim.EnableMIG("1", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// ledgerAv is the daemon's availability: the ledger (with the MIG overlap
// rule) and a set of unhealthy UUIDs.
type ledgerAv struct {
	*ledger.Ledger
	sick map[string]bool
}

func (a ledgerAv) Healthy(uuid string) bool { return !a.sick[uuid] }

type memStore struct{ grants []ledger.Grant }

func (s *memStore) Load() ([]ledger.Grant, error) { return s.grants, nil }
func (s *memStore) Save(g []ledger.Grant) error   { s.grants = g; return nil }
func newAv(t *testing.T, inv *gpu.Inventory) ledgerAv {
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	l.SetOverlaps(inv.Overlapping)
	return ledgerAv{Ledger: l, sick: map[string]bool{}}
}

var holder = ledger.Holder{ContainerID: "cccccccccccccccc", Container: "c", PodUID: "uid-c"}

func ids(gs []*gpu.GPU) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.ID()
	}
	return out
}

func TestChooseMIGByName(t *testing.T) {
	inv := mixedMIG(t)
	av := newAv(t, inv)
	got, err := Choose(inv, av, []string{"0:1", inv.GPUs[1].MIG[1].UUID}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0:1", "1:1"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Choose = %v, want %v", ids(got), want)
	}
	if got[0].Instance.Profile != "2g.10gb" || got[0].UUID != inv.GPUs[0].MIG[1].UUID || got[0].ParentUUID != inv.GPUs[0].UUID {
		t.Fatalf("0:1 = %+v, want the 2g.10gb instance of GPU 0", got[0])
	}
	if n := got[0].Nodes(); len(n) != 3 || n[0] != inv.GPUs[0].Node() || n[1] != got[0].Instance.Caps[0] || n[2] != got[0].Instance.Caps[1] {
		t.Fatalf("nodes of 0:1 = %v, want GPU 0's node and its two caps nodes", n)
	}
}

func TestChooseMIGRule(t *testing.T) {
	inv := mixedMIG(t)
	tests := []struct {
		name  string
		held  string // held by holder first ("" for none)
		sick  string // unhealthy UUID
		ids   []string
		count int
		kind  error
	}{
		{"parent held: its instance busy", "0", "", []string{"0:2"}, 0, ErrHeld},
		{"instance held: its parent busy", "0:2", "", []string{"0"}, 0, ErrHeld},
		{"Xid on the parent: instance unhealthy", "", "0", []string{"0:3"}, 0, ErrUnhealthy},
		{"a GPU and its instance named together", "", "", []string{"0", "0:1"}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			av := newAv(t, inv)
			if tt.held != "" {
				g, err := inv.Lookup(tt.held)
				if err != nil {
					t.Fatal(err)
				}
				if err := av.Acquire(holder, ledger.Attach, ledger.Active, g.UUID); err != nil {
					t.Fatal(err)
				}
			}
			if tt.sick != "" {
				g, _ := inv.Lookup(tt.sick)
				av.sick[g.UUID] = true
			}
			got, err := Choose(inv, av, tt.ids, tt.count)
			if err == nil || (tt.kind != nil && !errors.Is(err, tt.kind)) {
				t.Fatalf("Choose(%v) = %v, %v; want %v", tt.ids, ids(got), err, tt.kind)
			}
		})
	}
}

func TestChooseCountSkipsMIGGPUs(t *testing.T) {
	inv := mixedMIG(t)
	got, err := Choose(inv, newAv(t, inv), nil, 6)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"2", "3", "4", "5", "6", "7"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Choose(count 6) = %v, want the six GPUs not in MIG mode %v", ids(got), want)
	}
	if _, err := Choose(inv, newAv(t, inv), nil, 7); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("Choose(count 7) err = %v, want ErrNotEnough: GPUs 0 and 1 are in MIG mode", err)
	}
}

func TestChooseMIGByProfile(t *testing.T) {
	inv := mixedMIG(t)
	av := newAv(t, inv)
	if err := av.Acquire(holder, ledger.Attach, ledger.Active, inv.GPUs[1].MIG[0].UUID); err != nil {
		t.Fatal(err)
	}
	got, err := ChooseMIG(inv, av, "1g.5gb", 2)
	if err != nil {
		t.Fatal(err)
	}
	// GPU 1 already lends an instance: its free one goes first
	if want := []string{"1:1", "0:2"}; !slices.Equal(ids(got), want) {
		t.Fatalf("ChooseMIG(1g.5gb, 2) = %v, want %v", ids(got), want)
	}
	if _, err := ChooseMIG(inv, av, "1g.5gb", 4); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("ChooseMIG(1g.5gb, 4) err = %v, want ErrNotEnough (3 free)", err)
	}
	if _, err := ChooseMIG(inv, av, "7g.40gb", 1); err == nil {
		t.Fatal("ChooseMIG of a profile no GPU has: no error")
	}
}
