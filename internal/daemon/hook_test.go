package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

func TestHookReserveAndRelease(t *testing.T) {
	c := runDaemon(t, testConfig(t))
	ctx := context.Background()
	pid := os.Getpid()
	res, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "docker-a", PID: pid, IDs: []string{"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GPUs) != 1 || res.GPUs[0].Index != 1 || len(res.Control) == 0 {
		t.Fatalf("reservation = %+v", res)
	}
	// Idempotent for the same container (prestart and createRuntime both set).
	if _, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "docker-a", PID: pid, IDs: []string{"1"}}); err != nil {
		t.Errorf("same container again: %v", err)
	}
	for name, req := range map[string]api.HookReserveRequest{
		"same GPU, other container": {ContainerID: "docker-b", PID: pid, IDs: []string{"1"}},
		"all while one is held":     {ContainerID: "docker-b", PID: pid, All: true},
	} {
		if _, err := c.HookReserve(ctx, req); err == nil || !strings.Contains(err.Error(), "held by") {
			t.Errorf("%s: err %v, want a refusal naming the holder", name, err)
		}
	}
	for name, req := range map[string]api.HookReserveRequest{
		"path as id": {ContainerID: "x", PID: pid, IDs: []string{"/dev/sda"}},
		"no pid":     {ContainerID: "x", IDs: []string{"1"}},
		"slash id":   {ContainerID: "../x", PID: pid, IDs: []string{"1"}},
		"nothing":    {ContainerID: "x", PID: pid},
	} {
		if _, err := c.HookReserve(ctx, req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	gpus, _ := c.GPUs(ctx)
	if g := gpus[1].Grant; g == nil || g.Reason != ledger.Hook || g.Holder.ContainerID != "docker-a" {
		t.Fatalf("ledger: GPU 1 = %+v", g)
	}
	must(t, c.HookRelease(ctx, "docker-a"))
	if gpus, _ := c.GPUs(ctx); gpus[1].Grant != nil {
		t.Errorf("GPU 1 still held after release: %+v", gpus[1].Grant)
	}
}

func TestSweepReleasesHookGrantsOfGoneContainers(t *testing.T) {
	d, err := New(testConfig(t), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true")
	must(t, gone.Run())
	inv := d.Inventory()
	must(t, d.ledger.Acquire(ledger.Holder{ContainerID: "alive", PID: os.Getpid()}, ledger.Hook, ledger.Active, inv.GPUs[0].UUID))
	must(t, d.ledger.Acquire(ledger.Holder{ContainerID: "gone", PID: gone.Process.Pid}, ledger.Hook, ledger.Active, inv.GPUs[1].UUID))
	must(t, d.ledger.Acquire(ledger.Holder{ContainerID: "moved", PID: os.Getpid(), Cgroup: "/not/my/cgroup"}, ledger.Hook, ledger.Active, inv.GPUs[2].UUID))
	d.sweepHookGrants()
	held := map[string]bool{}
	for _, g := range d.ledger.Grants() {
		held[g.Holder.ContainerID] = true
	}
	if !held["alive"] || held["gone"] || held["moved"] {
		t.Errorf("after sweep: %v, want only alive", held)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cfg := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	cfg.Metrics.Address = ln.Addr().String()
	ln.Close()
	c := runDaemon(t, cfg)
	ctx := context.Background()
	if _, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "m", PID: os.Getpid(), IDs: []string{"2"}}); err != nil {
		t.Fatal(err)
	}
	_, _ = c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "n", PID: os.Getpid(), IDs: []string{"2"}})
	body := get(t, "http://"+cfg.Metrics.Address+"/metrics")
	for _, want := range []string{
		`hotgpu_gpus{state="free"} 7`, `hotgpu_gpus{state="hook"} 1`,
		`hotgpu_operations_total{op="hook",result="ok"} 1`, `hotgpu_operations_total{op="hook",result="error"} 1`,
		`hotgpu_allocation_errors_total{reason="held"} 1`, `hotgpu_operation_duration_seconds_count{op="hook"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "hotgpu_nri_connected") {
		t.Error("NRI is disabled, yet hotgpu_nri_connected is exported")
	}
	if got := get(t, "http://"+cfg.Metrics.Address+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	if got := get(t, "http://"+cfg.Metrics.Address+"/readyz"); got != "ok\n" {
		t.Errorf("/readyz = %q", got)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
