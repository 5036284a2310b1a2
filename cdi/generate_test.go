package cdi

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/hooks"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// simInventory returns a simulated inventory with majors pinned by testdata.
func simInventory(t testing.TB, preset string, change func(*nvml.Sim) error) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate(preset), nvml.WithProcDevices("testdata/proc-devices"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if change != nil {
		if err := change(p.Simulation()); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// driverRoot is a fake driver root of the simulation's driver version.
func driverRoot(t testing.TB) string {
	inv := simInventory(t, "dgxa100", nil)
	return drivertest.New(t, drivertest.Options{Version: inv.DriverVersion, Daemons: true}).Dir
}

func TestGenerateGolden(t *testing.T) {
	root := driverRoot(t)
	mig := func(s *nvml.Sim) error { return s.EnableMIG("0", "3g.20gb", "3g.20gb") }
	tests := []struct {
		name   string
		preset string
		change func(*nvml.Sim) error
		format string
		opts   []Option
	}{
		{name: "dgxa100-simulated", preset: "dgxa100", format: FormatYAML},
		{name: "dgxa100-mig-devroot", preset: "dgxa100", change: mig, format: FormatJSON, opts: []Option{WithDevRoot("/host")}},
		{name: "pcie8-driver-root", preset: "pcie8", format: FormatYAML, opts: []Option{
			WithDriverRoot(root), WithVendor("example.com"), WithClass("accel"), WithHookPath("/opt/hotgpu/bin/hotgpu-hook"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Generate(simInventory(t, tt.preset, tt.change), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Version != "0.5.0" {
				t.Errorf("cdiVersion %s, want 0.5.0, the lowest that allows numeric device names", spec.Version)
			}
			got, err := Encode(spec, tt.format)
			if err != nil {
				t.Fatal(err)
			}
			// The driver root is absolute, so it differs between checkouts.
			got = bytes.ReplaceAll(got, []byte(root), []byte("$DRIVER_ROOT"))
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cdi -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("spec differs from %s (run go test ./cdi -update if the change is intended):\n%s", golden, got)
			}
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	inv := simInventory(t, "dgxa100", nil)
	real := *inv
	real.Simulated = ""
	empty := t.TempDir()
	tests := []struct {
		name   string
		inv    *gpu.Inventory
		opts   []Option
		target error
		want   []string
	}{
		{name: "nil inventory", inv: nil, target: ErrNoGPUs, want: []string{"nvidia-smi"}},
		{name: "no GPUs", inv: &gpu.Inventory{}, target: ErrNoGPUs},
		{name: "explicit driver root without libraries", inv: inv, opts: []Option{WithDriverRoot(empty)},
			target: ErrNoDriverLibraries, want: []string{empty, "usr/lib/x86_64-linux-gnu", "libcuda.so." + inv.DriverVersion, "--driver-root"}},
		{name: "real node without libraries", inv: &real, opts: []Option{WithDriverRoot(empty)}, target: ErrNoDriverLibraries},
		{name: "bad vendor", inv: inv, opts: []Option{WithVendor("not a vendor")}, want: []string{"vendor"}},
		{name: "bad class", inv: inv, opts: []Option{WithClass("a/b")}, want: []string{"class"}},
		{name: "relative driver root", inv: inv, opts: []Option{WithDriverRoot("run/nvidia")}, want: []string{"absolute"}},
		{name: "relative dev root", inv: inv, opts: []Option{WithDevRoot("host")}, want: []string{"absolute"}},
		{name: "relative hook", inv: inv, opts: []Option{WithHookPath("hotgpu-hook")}, want: []string{"absolute"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Generate(tt.inv, tt.opts...)
			if err == nil {
				t.Fatalf("got spec %s, want an error", spec.Kind)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.target)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDeviceNames(t *testing.T) {
	inv := simInventory(t, "dgxa100", func(s *nvml.Sim) error { return s.EnableMIG("7", "1g.5gb") })
	spec, err := Generate(inv)
	if err != nil {
		t.Fatal(err)
	}
	names := DeviceNames(spec)
	// 8 indices + 8 UUIDs + one MIG device by name and UUID + all.
	if len(names) != 19 || names[0] != "nvidia.com/gpu=0" || names[8] != "nvidia.com/gpu="+inv.GPUs[0].UUID ||
		names[16] != "nvidia.com/gpu=7:0" || names[18] != "nvidia.com/gpu=all" {
		t.Fatalf("names = %v", names)
	}
}

// TestLostGPUHasNoDevice: a GPU NVML counts but cannot read gets no CDI
// device and is not in "all"; the others keep their names.
func TestLostGPUHasNoDevice(t *testing.T) {
	inv := simInventory(t, "dgxa100", func(s *nvml.Sim) error { return s.LoseGPU("1") })
	spec, err := Generate(inv)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, d := range spec.Devices {
		names[d.Name] = len(d.ContainerEdits.DeviceNodes)
	}
	if _, ok := names["1"]; ok {
		t.Error("the lost GPU 1 has a device")
	}
	if _, ok := names[inv.GPUs[1].UUID]; ok {
		t.Error("the lost GPU's UUID has a device")
	}
	if names["0"] != 1 || names["7"] != 1 || names[inv.GPUs[2].UUID] != 1 || names[AllDevice] != 7 {
		t.Errorf("devices = %v, want 0 and 2-7 by index and UUID, all with 7 nodes", names)
	}
}

// TestHooksAreBounded: the runtime must kill a hung hook (update-ldcache on
// a FIFO, say) rather than wait on container creation forever.
func TestHooksAreBounded(t *testing.T) {
	spec, err := Generate(simInventory(t, "dgxa100", nil), WithDriverRoot(driverRoot(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.ContainerEdits.Hooks) == 0 {
		t.Fatal("the spec has no hooks")
	}
	for _, h := range spec.ContainerEdits.Hooks {
		if h.Timeout == nil || time.Duration(*h.Timeout)*time.Second <= hooks.DefaultLDCacheTimeout {
			t.Errorf("hook %v: timeout %v, want one above the hook's own deadline %v", h.Args, h.Timeout, hooks.DefaultLDCacheTimeout)
		}
	}
}
