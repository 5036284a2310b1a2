package daemon

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

func migResources(d *Daemon) []string {
	var out []string
	for _, p := range d.mig.plugins() {
		out = append(out, p.ResourceName())
	}
	slices.Sort(out)
	return out
}

// TestMIGLayoutChangeWithoutRestart: under the mixed strategy hotgpud serves
// one resource per MIG profile; when NVML reports a MIG layout change it
// reads the inventory again, rewrites the CDI spec and follows with the
// device plugins, without a restart and without touching held MIG devices;
// a held MIG device the change destroyed is reported, not hidden.
func TestMIGLayoutChangeWithoutRestart(t *testing.T) {
	atStart(t, func(s *nvml.Sim) error { return s.EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb") })
	cfg := testConfig(t)
	cfg.DevicePlugin.MIGStrategy = "mixed"
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := api.NewClient(cfg.API.Socket)
	waitFor(t, "the API", func() bool { _, err := c.Status(context.Background()); return err == nil })
	sim := d.provider.Simulation()
	waitFor(t, "the NVML event watcher", func() bool { return sim.InjectXid("2", 13) == nil }) // 13 is ignored
	want := []string{"nvidia.com/mig-1g.5gb", "nvidia.com/mig-2g.10gb", "nvidia.com/mig-3g.20gb"}
	waitFor(t, "the MIG plugins", func() bool { return slices.Equal(migResources(d), want) })
	if s := d.GPUStates(); s["mig"] != 1 || s["free"] != 7 {
		t.Fatalf("GPU states = %v, want GPU 0 counted as in MIG mode, not free", s)
	}

	inv := d.Inventory()
	held, gone := inv.GPUs[0].MIG[2], inv.GPUs[0].MIG[1] // 1g.5gb held; 2g.10gb free
	holder := ledger.Holder{ContainerID: "c0ffee1234567890", PodNamespace: "ml", PodName: "p", Container: "app"}
	if err := d.ledger.Acquire(holder, ledger.Attach, ledger.Active, held.UUID); err != nil {
		t.Fatal(err)
	}
	cdiPath, _ := d.cdiPath.Load().(string)
	spec := func() string {
		b, err := os.ReadFile(cdiPath)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if !strings.Contains(spec(), gone.UUID) {
		t.Fatal("the CDI spec lacks the 2g.10gb device before the change")
	}
	// nvidia-smi mig -dgi of the free 2g.10gb, -cgi 4g.20gb on GPU 1
	if err := sim.DestroyInstance("0", gone.GI); err != nil {
		t.Fatal(err)
	}
	if err := sim.EnableMIG("1", "4g.20gb"); err != nil {
		t.Fatal(err)
	}
	want = []string{"nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb", "nvidia.com/mig-4g.20gb"}
	waitFor(t, "the plugins to follow the new layout", func() bool { return slices.Equal(migResources(d), want) })
	if s := spec(); strings.Contains(s, gone.UUID) || !strings.Contains(s, held.UUID) || !strings.Contains(s, d.Inventory().GPUs[1].MIG[0].UUID) {
		t.Fatal("the CDI spec does not follow the new layout")
	}
	if g, ok := d.ledger.Lookup(held.UUID); !ok || g.Holder.ContainerID != holder.ContainerID {
		t.Fatalf("the held MIG device's grant changed: %v", d.ledger.Grants())
	}
	if st, _ := c.Status(context.Background()); len(st.Problems) != 0 {
		t.Fatalf("problems after a change that kept the held device: %v", st.Problems)
	}

	// a change that destroys the held device is reported, and its grant
	// stays until its holder lets go
	if err := sim.DestroyInstance("0", held.GI); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the destroyed held device in status", func() bool {
		st, err := c.Status(context.Background())
		return err == nil && len(st.Problems) == 1 && strings.Contains(st.Problems[0], held.UUID)
	})
	if _, ok := d.ledger.Lookup(held.UUID); !ok {
		t.Fatal("the destroyed held device's grant was dropped silently")
	}
}

// TestHookReserveMIG: hotgpu-hook (runtimes without NRI) names MIG devices
// like every other path and follows the same rule: the reservation carries
// the instance's caps nodes, and its parent is refused to another container.
func TestHookReserveMIG(t *testing.T) {
	atStart(t, func(s *nvml.Sim) error { return s.EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb") })
	c := runDaemon(t, testConfig(t))
	ctx := context.Background()
	pid := os.Getpid()
	res, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "docker-a", PID: pid, IDs: []string{"0:2"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GPUs) != 1 || res.GPUs[0].Instance == nil || res.GPUs[0].ID() != "0:2" || len(res.GPUs[0].Nodes()) != 3 {
		t.Fatalf("reservation = %+v, want MIG device 0:2 with its parent's and two caps nodes", res.GPUs)
	}
	parent := res.GPUs[0].ParentUUID
	if _, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "docker-b", PID: pid, IDs: []string{parent}}); err == nil || !strings.Contains(err.Error(), res.GPUs[0].UUID) {
		t.Fatalf("GPU 0 whole while its 0:2 is held: %v, want a refusal naming 0:2's UUID", err)
	}
	if _, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "docker-b", PID: pid, IDs: []string{"0:3"}}); err != nil {
		t.Fatalf("the sibling 0:3: %v", err)
	}
}
