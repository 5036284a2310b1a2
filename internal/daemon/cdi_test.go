package daemon

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// TestSimulateUsesDriverRoot: a driver root given with --simulate is used
// like a real one, so the spec mounts its libraries and runs the hooks from
// --hook-path; before, the simulation dropped it and the library path never
// ran anywhere.
func TestSimulateUsesDriverRoot(t *testing.T) {
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	root := drivertest.New(t, drivertest.Options{Version: inv.DriverVersion})
	cfg := testConfig(t)
	cfg.DriverRoot = root.Dir
	cfg.HookPath = "/opt/test/bin/hotgpu-hook"
	c := runDaemon(t, cfg)
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile(st.CDISpec)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"hostPath: " + root.Dir + drivertest.LibDir + "/libcuda.so." + inv.DriverVersion,
		"path: " + cfg.HookPath,
		"create-symlinks",
		"libcuda.so.1::" + drivertest.LibDir + "/libcuda.so",
		"update-ldcache",
	} {
		if !strings.Contains(string(spec), want) {
			t.Errorf("spec lacks %q:\n%s", want, spec)
		}
	}
}
