package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
)

// TestHealthFromSimulatedXidsAndTheAPI drives GPU health the two ways a
// simulated node offers: NVML events from the mock and `hotgpu health set`.
func TestHealthFromSimulatedXidsAndTheAPI(t *testing.T) {
	cfg := testConfig(t)
	cfg.DevicePlugin.KubeletDir = t.TempDir()
	cfg.Health.RecoveryWindow.Duration = 300 * time.Millisecond
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := api.NewClient(cfg.API.Socket)
	gpu := func(i int) api.HealthStatus {
		t.Helper()
		list, err := c.Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return list[i]
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ok() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	waitFor("the API", func() bool { _, err := c.Status(context.Background()); return err == nil })

	sim := d.provider.Simulation()
	waitFor("the NVML event watcher", func() bool { return sim.InjectXid("2", 13) == nil }) // 13 is ignored
	// A fatal Xid first, then a transient one: by the time the transient
	// one has healed, the fatal one's quiet window has passed as well.
	if err := sim.InjectXid("4", 79); err != nil {
		t.Fatal(err)
	}
	waitFor("GPU 4 unhealthy after Xid 79", func() bool { g := gpu(4); return !g.Healthy && g.Reason == "Xid 79" && g.Fatal })
	if err := sim.InjectXid("3", 62); err != nil {
		t.Fatal(err)
	}
	waitFor("GPU 3 unhealthy after Xid 62", func() bool { g := gpu(3); return !g.Healthy && g.Reason == "Xid 62" && !g.Fatal })
	if !gpu(2).Healthy {
		t.Fatal("ignored Xid 13 made GPU 2 unhealthy")
	}
	waitFor("GPU 3 to recover after a quiet window", func() bool { return gpu(3).Healthy })
	if gpu(4).Healthy {
		t.Fatal("Xid 79 (fallen off the bus) healed by itself: it needs a GPU reset")
	}
	if st, err := c.SetHealth(context.Background(), api.HealthSetRequest{ID: "4", Healthy: true}); err != nil || !st.Healthy {
		t.Fatalf("operator marking GPU 4 healthy after its reset = %+v, %v", st, err)
	}

	st, err := c.SetHealth(context.Background(), api.HealthSetRequest{ID: "5", Reason: "demo"})
	if err != nil || st.Healthy || !st.Manual || st.Reason != "demo" {
		t.Fatalf("SetHealth = %+v, %v", st, err)
	}
	time.Sleep(2 * cfg.Health.RecoveryWindow.Duration)
	if gpu(5).Healthy {
		t.Fatal("a manual mark recovered by itself")
	}
	if st, err := c.SetHealth(context.Background(), api.HealthSetRequest{ID: "5", Healthy: true}); err != nil || !st.Healthy {
		t.Fatalf("SetHealth healthy = %+v, %v", st, err)
	}
	if _, err := c.SetHealth(context.Background(), api.HealthSetRequest{ID: "42"}); err == nil {
		t.Fatal("marked a GPU that does not exist")
	}
}
