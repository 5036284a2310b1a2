package nvml

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml/sim"
)

// newSimProvider starts a simulated provider with majors pinned by testdata.
func newSimProvider(t testing.TB, preset string) *Provider {
	t.Helper()
	p, err := New(WithSimulate(preset), WithProcDevices("testdata/proc-devices"))
	if err != nil {
		t.Fatalf("New(%s): %v", preset, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func inventory(t testing.TB, p *Provider) *gpu.Inventory {
	t.Helper()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	return inv
}

func TestInventoryPresets(t *testing.T) {
	tests := []struct {
		preset string
		name   string
		bus0   string
	}{
		{preset: "dgxa100", name: "A100-SXM4-40GB", bus0: "0000:07:00.0"},
		{preset: "pcie8", name: "A100-PCIE-40GB", bus0: "0000:1b:00.0"},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			inv := inventory(t, newSimProvider(t, tt.preset))
			if inv.Simulated != tt.preset || inv.DriverVersion != "550.54.15" || inv.CUDAVersion != "12.4" {
				t.Errorf("got simulated=%q driver=%q cuda=%q", inv.Simulated, inv.DriverVersion, inv.CUDAVersion)
			}
			if len(inv.GPUs) != 8 {
				t.Fatalf("got %d GPUs, want 8", len(inv.GPUs))
			}
			buses := map[string]bool{}
			for i, g := range inv.GPUs {
				if g.Index != i || g.Minor != i || !strings.HasPrefix(g.UUID, "GPU-") || len(g.UUID) != 40 {
					t.Errorf("GPU %d: index=%d minor=%d uuid=%q", i, g.Index, g.Minor, g.UUID)
				}
				if !strings.Contains(g.Name, tt.name) || g.MemoryMiB != 40960 || g.MIGEnabled || len(g.Peers) != 7 {
					t.Errorf("GPU %d: name=%q mem=%d mig=%v peers=%d", i, g.Name, g.MemoryMiB, g.MIGEnabled, len(g.Peers))
				}
				buses[g.PCIBusID] = true
			}
			if len(buses) != 8 || inv.GPUs[0].PCIBusID != tt.bus0 {
				t.Errorf("bus ids not distinct or GPU 0 at %q: %v", inv.GPUs[0].PCIBusID, buses)
			}
			want := []gpu.DeviceNode{
				{Path: "/dev/nvidiactl", Major: 195, Minor: 255},
				{Path: "/dev/nvidia-uvm", Major: 509, Minor: 0},
				{Path: "/dev/nvidia-uvm-tools", Major: 509, Minor: 1},
			}
			if !slices.Equal(inv.Control, want) {
				t.Errorf("control nodes = %v, want %v", inv.Control, want)
			}
		})
	}
}

func uuids(inv *gpu.Inventory) []string {
	var out []string
	for _, g := range inv.GPUs {
		out = append(out, g.UUID)
	}
	return out
}

func TestUUIDsStableAcrossProcesses(t *testing.T) {
	first := uuids(inventory(t, newSimProvider(t, "dgxa100")))
	second := uuids(inventory(t, newSimProvider(t, "dgxa100")))
	if !slices.Equal(first, second) {
		t.Fatalf("UUIDs differ between two providers:\n%v\n%v", first, second)
	}
	other := uuids(inventory(t, newSimProvider(t, "pcie8")))
	if slices.ContainsFunc(other, func(u string) bool { return slices.Contains(first, u) }) {
		t.Errorf("presets share UUIDs: %v %v", first, other)
	}
	if got := len(slices.Compact(slices.Sorted(slices.Values(first)))); got != 8 {
		t.Errorf("got %d distinct UUIDs, want 8", got)
	}
}

func TestRemoveAndRestoreGPU(t *testing.T) {
	p := newSimProvider(t, "pcie8")
	before := inventory(t, p)
	gone := before.GPUs[3].UUID
	if err := p.Simulation().RemoveGPU(gone); err != nil {
		t.Fatal(err)
	}
	after := inventory(t, p)
	if len(after.GPUs) != 7 {
		t.Fatalf("got %d GPUs after removal, want 7", len(after.GPUs))
	}
	var minors []int
	for i, g := range after.GPUs {
		if g.Index != i || g.UUID == gone || len(g.Peers) != 6 {
			t.Errorf("position %d: index=%d uuid=%s peers=%d", i, g.Index, g.UUID, len(g.Peers))
		}
		minors = append(minors, g.Minor)
	}
	if want := []int{0, 1, 2, 4, 5, 6, 7}; !slices.Equal(minors, want) {
		t.Errorf("minors = %v, want %v (minors must not move)", minors, want)
	}
	if p2, _ := after.GPUs[2].Peer(3); p2.NVLinks != 0 {
		t.Errorf("GPU 2 keeps %d NVLinks to its removed partner", p2.NVLinks)
	}
	if err := p.Simulation().RemoveGPU(gone); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("second removal: got %v, want ErrNotFound", err)
	}
	if err := p.Simulation().RestoreGPU("3"); err != nil {
		t.Fatal(err)
	}
	if got := uuids(inventory(t, p)); !slices.Equal(got, uuids(before)) {
		t.Errorf("after restore UUIDs = %v, want %v", got, uuids(before))
	}
}

func TestSimulationNilOnRealHardware(t *testing.T) {
	p := &Provider{}
	if p.Simulation() != nil {
		t.Fatal("Simulation() != nil without WithSimulate")
	}
}

func TestUnknownPreset(t *testing.T) {
	_, err := New(WithSimulate("dgx-nope"))
	if err == nil || !strings.Contains(err.Error(), "dgxa100") {
		t.Fatalf("got %v, want an error listing the presets", err)
	}
}

func TestClosedProvider(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Inventory(); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestSimulatedMajorsWithoutDriver(t *testing.T) {
	p, err := New(WithSimulate("dgxa100"), WithProcDevices(t.TempDir()+"/absent"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Simulation().EnableMIG("0", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv := inventory(t, p)
	if inv.Control[1].Major != SimulatedUVMMajor || inv.GPUs[0].MIG[0].Caps[0].Major != SimulatedCapsMajor {
		t.Fatalf("control %v caps %v: want the simulated majors", inv.Control, inv.GPUs[0].MIG[0].Caps)
	}
}

func slot(i int) string { return strconv.Itoa(i) }

// TestLostGPUStaysCounted: a GPU that falls off the bus stays in NVML's
// count and fails only its own calls; the inventory keeps it as a lost
// record and reads every other GPU, at start-up and on a later refresh.
func TestLostGPUStaysCounted(t *testing.T) {
	p := newSimProvider(t, "pcie8")
	before := inventory(t, p)
	bus3 := before.GPUs[3].PCIBusID

	fresh := newSimProvider(t, "pcie8") // lost before its first inventory
	if err := fresh.Simulation().LoseGPU("3"); err != nil {
		t.Fatal(err)
	}
	if err := p.Simulation().LoseGPU(before.GPUs[3].UUID); err != nil { // lost between two reads
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    *Provider
		want gpu.GPU // the lost record, Lost aside
	}{
		{"at start-up", fresh, gpu.GPU{Index: 3, Minor: -1, UUID: gpu.LostID(bus3, 3), PCIBusID: bus3}},
		{"during refresh", p, gpu.GPU{Index: 3, Minor: 3, UUID: before.GPUs[3].UUID, PCIBusID: bus3,
			Name: before.GPUs[3].Name, MemoryMiB: before.GPUs[3].MemoryMiB}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := inventory(t, tt.p)
			if len(inv.GPUs) != 8 {
				t.Fatalf("got %d GPUs, want 8: a lost GPU stays counted", len(inv.GPUs))
			}
			lost := inv.GPUs[3]
			if !strings.Contains(lost.Lost, "ERROR_GPU_IS_LOST") {
				t.Errorf("GPU 3 Lost = %q, want NVML's GPU_IS_LOST", lost.Lost)
			}
			lost.Lost = ""
			if !reflect.DeepEqual(lost, tt.want) {
				t.Errorf("lost record = %+v, want %+v", lost, tt.want)
			}
			for i, g := range inv.GPUs {
				if i == 3 {
					continue
				}
				if g.Lost != "" || g.Index != i || g.Minor != i || g.UUID != before.GPUs[i].UUID || len(g.Peers) != 6 {
					t.Errorf("GPU %d: lost=%q index=%d minor=%d uuid=%s peers=%d", i, g.Lost, g.Index, g.Minor, g.UUID, len(g.Peers))
				}
				if _, ok := g.Peer(3); ok {
					t.Errorf("GPU %d keeps a peer link to the lost GPU", i)
				}
			}
		})
	}
	if err := p.Simulation().RestoreGPU("3"); err != nil {
		t.Fatal(err)
	}
	if after := inventory(t, p); !reflect.DeepEqual(after, before) {
		t.Errorf("after a reset the inventory differs:\n%+v\n%+v", after, before)
	}
}

// TestUnopenableGPUIsKeptByIndex: when NVML cannot even hand out a GPU's
// handle, the record is by index.
func TestUnopenableGPUIsKeptByIndex(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	byIndex := p.sim.Server().DeviceGetHandleByIndexFunc
	p.sim.Server().DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i == 5 {
			return nil, nvml.ERROR_UNKNOWN
		}
		return byIndex(i)
	}
	inv := inventory(t, p)
	g := inv.GPUs[5]
	if len(inv.GPUs) != 8 || g.UUID != "lost-index-5" || g.Minor != -1 || !strings.Contains(g.Lost, "ERROR_UNKNOWN") {
		t.Fatalf("GPU 5 = %+v among %d GPUs, want a lost record by index", g, len(inv.GPUs))
	}
}

// The simulation runs nothing on its GPUs: the busy check gets no pids.
func TestSimProcessesNone(t *testing.T) {
	p, err := New(WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	pids, err := p.Processes(inv.GPUs[0].UUID)
	if err != nil || len(pids) != 0 {
		t.Fatalf("Processes = %v, %v; want none", pids, err)
	}
}
