package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// atStart changes the simulated node before the daemon first reads it.
func atStart(t *testing.T, change func(*nvml.Sim) error) {
	t.Helper()
	newProvider = func(opts ...nvml.Option) (*nvml.Provider, error) {
		p, err := nvml.New(opts...)
		if err == nil {
			err = change(p.Simulation())
		}
		return p, err
	}
	t.Cleanup(func() { newProvider = nvml.New })
}

// TestUnwatchedGPUIsUnhealthy: a GPU whose error events NVML cannot deliver
// is unhealthy, with the reason, not silently healthy.
func TestUnwatchedGPUIsUnhealthy(t *testing.T) {
	atStart(t, func(s *nvml.Sim) error { return s.DropEvents("6") })
	cfg := testConfig(t)
	runDaemon(t, cfg)
	d := func() api.HealthStatus {
		list, err := api.NewClient(cfg.API.Socket).Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return list[6]
	}
	waitFor(t, "GPU 6 unhealthy", func() bool { return !d().Healthy })
	if s := d(); !s.Fatal || !strings.Contains(s.Reason, "cannot be watched") {
		t.Fatalf("GPU 6 = %+v, want a fatal mark saying its errors cannot be watched", s)
	}
}

func healthOf(t *testing.T, d *Daemon, index int) api.HealthStatus {
	t.Helper()
	for _, s := range d.Health() {
		if s.Index == index {
			return s
		}
	}
	t.Fatalf("GPU %d is not in the health list", index)
	return api.HealthStatus{}
}

// TestLostGPUAtStartup: a node with a GPU that fell off the bus starts; the
// GPU is kept, unhealthy, out of the CDI spec; the others are watched.
func TestLostGPUAtStartup(t *testing.T) {
	atStart(t, func(s *nvml.Sim) error { return s.LoseGPU("2") })
	cfg := testConfig(t)
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatalf("one lost GPU failed start-up: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if n := len(d.Inventory().GPUs); n != 8 {
		t.Fatalf("inventory has %d GPUs, want 8", n)
	}
	lost := healthOf(t, d, 2)
	if lost.Healthy || !lost.Fatal || !strings.Contains(lost.Reason, "GPU_IS_LOST") {
		t.Fatalf("GPU 2 health = %+v, want unhealthy, fatal, GPU_IS_LOST", lost)
	}
	if _, err := d.SetHealth(api.HealthSetRequest{ID: "2", Healthy: true}); !errors.Is(err, apiserver.ErrRefused) {
		t.Errorf("marking a lost GPU healthy: err = %v, want ErrRefused", err)
	}
	if _, err := d.HookReserve(api.HookReserveRequest{ContainerID: "c1", PID: 1, IDs: []string{"2"}}); !errors.Is(err, apiserver.ErrRefused) {
		t.Errorf("the hook was given the lost GPU: err = %v", err)
	}
	if _, err := d.HookReserve(api.HookReserveRequest{ContainerID: "c1", PID: 1, IDs: []string{"3"}}); err != nil {
		t.Errorf("a GPU beside the lost one was refused: %v", err)
	}
	c := api.NewClient(cfg.API.Socket)
	waitFor(t, "the API", func() bool { _, err := c.Status(context.Background()); return err == nil })
	spec, err := os.ReadFile(filepath.Join(cfg.CDI.Dir, "hotgpu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(spec), "name: \"3\"") || strings.Contains(string(spec), "name: \"2\"") ||
		strings.Contains(string(spec), lost.UUID) {
		t.Errorf("CDI spec must keep GPU 3 and leave the lost GPU 2 out:\n%s", spec)
	}
	// The health watcher runs for the other GPUs.
	sim := d.provider.Simulation()
	waitFor(t, "the NVML event watcher", func() bool { return sim.InjectXid("3", 62) == nil })
	waitFor(t, "GPU 3 unhealthy after Xid 62", func() bool { return !healthOf(t, d, 3).Healthy })

	// Reset: NVML reads GPU 2 again, under its real UUID. The watcher
	// registered at start without it, so it stays unhealthy, saying why.
	if err := sim.RestoreGPU("2"); err != nil {
		t.Fatal(err)
	}
	d.refreshInventory()
	back := healthOf(t, d, 2)
	if back.UUID == lost.UUID || back.Healthy || !strings.Contains(back.Reason, "restart hotgpud") {
		t.Fatalf("GPU 2 back from lost = %+v, want its real UUID, unhealthy until hotgpud restarts", back)
	}
	for _, s := range d.health.Unhealthy() {
		if s.UUID == lost.UUID {
			t.Errorf("the stand-in %s keeps a health mark after the GPU came back", lost.UUID)
		}
	}
}

// TestLostGPUDuringRefresh: a GPU lost while the daemon runs keeps its
// identity, becomes unhealthy before the new inventory is published, and is
// healthy again once NVML reads it after a reset.
func TestLostGPUDuringRefresh(t *testing.T) {
	d, err := New(testConfig(t), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.provider.Close() })
	before := d.Inventory().GPUs[5]
	sim := d.provider.Simulation()
	if err := sim.LoseGPU("5"); err != nil {
		t.Fatal(err)
	}
	d.refreshInventory()
	inv := d.Inventory()
	if g := inv.GPUs[5]; len(inv.GPUs) != 8 || g.Lost == "" || g.UUID != before.UUID || g.Minor != before.Minor {
		t.Fatalf("after the loss: %d GPUs, GPU 5 = %+v", len(inv.GPUs), g)
	}
	if s := healthOf(t, d, 5); s.Healthy || !s.Fatal {
		t.Fatalf("GPU 5 health = %+v, want unhealthy and fatal", s)
	}
	for _, s := range d.Health() {
		if s.Index != 5 && !s.Healthy {
			t.Errorf("GPU %d unhealthy: %+v", s.Index, s)
		}
	}
	if err := sim.RestoreGPU("5"); err != nil {
		t.Fatal(err)
	}
	d.refreshInventory()
	if s := healthOf(t, d, 5); !s.Healthy {
		t.Fatalf("after a reset GPU 5 health = %+v, want healthy", s)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestFatalEvents: which NVML events need a GPU reset. Application Xids
// (when not ignored) and other Xids heal after the quiet window.
func TestFatalEvents(t *testing.T) {
	tests := []struct {
		e    nvml.Event
		want bool
	}{
		{nvml.Event{Kind: nvml.XidError, Xid: 79}, true},
		{nvml.Event{Kind: nvml.XidError, Xid: 48}, true},
		{nvml.Event{Kind: nvml.XidError, Xid: 94}, true},
		{nvml.Event{Kind: nvml.XidError, Xid: 119}, true},
		{nvml.Event{Kind: nvml.DoubleBitECC}, true},
		{nvml.Event{Kind: nvml.GPULost}, true},
		{nvml.Event{Kind: nvml.XidError, Xid: 13}, false}, // application error
		{nvml.Event{Kind: nvml.XidError, Xid: 43}, false},
		{nvml.Event{Kind: nvml.XidError, Xid: 62}, false},
		{nvml.Event{Kind: nvml.WaitFailed, Detail: "ERROR_UNKNOWN"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.e.Reason(), func(t *testing.T) {
			if got := fatal(tt.e); got != tt.want {
				t.Fatalf("fatal = %v, want %v", got, tt.want)
			}
		})
	}
}
