package deviceplugin

import (
	"sync"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/health"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

type staticInventory struct {
	mu  sync.Mutex
	inv *gpu.Inventory
}

func (s *staticInventory) Inventory() *gpu.Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inv
}

// simInventory is a simulated 8-GPU node (dgxa100: NVSwitch, or pcie8:
// NVLink pairs behind PCIe switches).
func simInventory(t testing.TB, preset string) *staticInventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate(preset))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return &staticInventory{inv: inv}
}

type fixture struct {
	p      *Plugin
	inv    *gpu.Inventory
	ledger *ledger.Ledger
	health *health.Tracker
}

func newFixture(t testing.TB, preset string, opts ...Option) *fixture {
	t.Helper()
	store, err := ledger.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(store)
	if err != nil {
		t.Fatal(err)
	}
	inv := simInventory(t, preset)
	h := health.New()
	p, err := New(inv, l, append([]Option{WithHealth(h)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{p: p, inv: inv.inv, ledger: l, health: h}
}

func (f *fixture) uuid(i int) string { return f.inv.GPUs[i].UUID }

var attached = ledger.Holder{ContainerID: "cccccccccccccccc", PodNamespace: "ml", PodName: "dev", Container: "shell", PodUID: "uid-c"}
