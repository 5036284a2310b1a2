package daemon

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/api"
)

func testConfig(t *testing.T) *configv1.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := configv1.Default()
	cfg.Simulate = "dgxa100"
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CDI.Dir = filepath.Join(dir, "cdi")
	cfg.API.Socket = filepath.Join(dir, "api.sock")
	cfg.NRI.Disabled = true
	// A private kubelet dir: never register with a kubelet on this host.
	cfg.DevicePlugin.KubeletDir = filepath.Join(dir, "device-plugins")
	return cfg
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func runDaemon(t *testing.T, cfg *configv1.Config) *api.Client {
	t.Helper()
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(cfg.API.Socket); !os.IsNotExist(err) {
			t.Errorf("API socket left behind after shutdown: %v", err)
		}
	})
	c := api.NewClient(cfg.API.Socket)
	for i := 0; i < 200; i++ {
		if _, err := c.Status(context.Background()); err == nil {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("API did not come up")
	return nil
}

func TestDaemonServesAndWritesCDI(t *testing.T) {
	cfg := testConfig(t)
	c := runDaemon(t, cfg)
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.GPUs != 8 || st.Simulated != "dgxa100" || st.CDISpec != filepath.Join(cfg.CDI.Dir, cdi.SpecFile(cdi.FormatYAML)) ||
		!strings.HasPrefix(st.DevicePlugin, "waiting for kubelet") {
		t.Fatalf("status = %+v", st)
	}
	spec, err := os.ReadFile(st.CDISpec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(spec), "kind: nvidia.com/gpu") || !strings.Contains(string(spec), "/dev/nvidia7") {
		t.Fatalf("spec:\n%s", spec)
	}
	gpus, err := c.GPUs(context.Background())
	if err != nil || len(gpus) != 8 || gpus[0].Grant != nil || !gpus[0].Healthy {
		t.Fatalf("gpus = %+v, %v", gpus, err)
	}
}

func TestCorruptLedgerIsMovedAsideNotIgnored(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "ledger.json"), []byte(`{"version":1,"grants":[{"gpu":`), 0o600); err != nil {
		t.Fatal(err)
	}
	runDaemon(t, cfg)
	matches, _ := filepath.Glob(filepath.Join(cfg.StateDir, "ledger.json.corrupt-*"))
	if len(matches) != 1 {
		t.Fatalf("corrupt ledger not kept aside: %v", matches)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.Simulate = "dgx-nonexistent"
	if _, err := New(cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "dgx-nonexistent") {
		t.Fatalf("err = %v", err)
	}
}
