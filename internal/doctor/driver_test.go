package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

func TestDriverChecksNVML(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			inv := simulated(t, preset, nil)
			cs := driverChecks(inv, nil, "", "")
			expect(t, find(t, cs, StepDriver, "nvml"), OK, inv.DriverVersion, inv.CUDAVersion, fmt.Sprintf("%d GPU(s)", len(inv.GPUs)), "simulated "+preset)
			for _, g := range inv.GPUs {
				expect(t, find(t, cs, StepDriver, "gpu "+strconv.Itoa(g.Index)), OK, g.UUID, g.PCIBusID, "minor "+strconv.Itoa(g.Minor), "MIG off")
			}
			expect(t, find(t, cs, StepDriver, "kernel"), Skip, "simulated")
		})
	}
}

func TestDriverChecksNVMLFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices")
	must(t, os.WriteFile(path, []byte("Character devices:\n  1 mem\n"), 0o644))
	cs := driverChecks(nil, errors.New("failed to initialize NVML: driver not loaded"), path, "/")
	expect(t, find(t, cs, StepDriver, "nvml"), Fail, "driver not loaded", "nvidia-smi", "--simulate")
	expect(t, find(t, cs, StepDriver, "kernel module nvidia"), Fail, "not loaded")
	if len(cs) != 3 {
		t.Errorf("want the nvml and kernel module checks when NVML fails, got\n%s", dump(cs))
	}
}

func TestDriverChecksLostAndMIG(t *testing.T) {
	inv := simulated(t, "dgxa100", func(s *nvml.Sim) {
		must(t, s.LoseGPU("2"))
		must(t, s.EnableMIG("5", "1g.5gb", "1g.5gb"))
	})
	cs := driverChecks(inv, nil, "", "")
	expect(t, find(t, cs, StepDriver, "gpu 2"), Fail, "LOST", "Xid 79", "nvidia-smi -r -i 2")
	expect(t, find(t, cs, StepDriver, "gpu 5"), OK, "MIG on, 2 instance(s)")
}

// fakeKernel writes a /proc/devices and makes the nodes of inv under a
// fake dev root: what a host with the driver loaded has.
func fakeKernel(t *testing.T, inv *gpu.Inventory, uvm bool) (procDevices, devRoot string) {
	t.Helper()
	testenv.RequireRoot(t, "makes device nodes in a fake /dev")
	dir := t.TempDir()
	procDevices, devRoot = filepath.Join(dir, "devices"), filepath.Join(dir, "root")
	table := "Character devices:\n  1 mem\n195 nvidia-frontend\n"
	if uvm {
		table += fmt.Sprintf("%d nvidia-uvm\n", nvml.SimulatedUVMMajor)
	}
	must(t, os.WriteFile(procDevices, []byte(table+"\nBlock devices:\n  8 sd\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(devRoot, "dev"), 0o755))
	nodes := inv.Control
	for _, g := range inv.GPUs {
		nodes = append(nodes, g.Node())
	}
	for _, n := range nodes {
		must(t, unix.Mknod(filepath.Join(devRoot, n.Path), unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(n.Major), uint32(n.Minor)))))
	}
	return procDevices, devRoot
}

func TestDriverChecksKernel(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			inv := simulated(t, preset, nil)
			procDevices, devRoot := fakeKernel(t, inv, true)
			cs := driverChecks(inv, nil, procDevices, devRoot)
			expect(t, find(t, cs, StepDriver, "kernel module nvidia"), OK, "major 195")
			expect(t, find(t, cs, StepDriver, "kernel module nvidia-uvm"), OK, "major 511")
			want := len(inv.GPUs) + len(inv.Control)
			expect(t, find(t, cs, StepDriver, "device nodes"), OK, fmt.Sprintf("%d of %d nodes", want, want))

			// A stale node (another minor) fails; a missing one warns.
			must(t, os.Remove(filepath.Join(devRoot, "dev/nvidia1")))
			must(t, unix.Mknod(filepath.Join(devRoot, "dev/nvidia1"), unix.S_IFCHR|0o666, int(unix.Mkdev(195, 9))))
			must(t, os.Remove(filepath.Join(devRoot, "dev/nvidia2")))
			cs = driverChecks(inv, nil, procDevices, devRoot)
			expect(t, find(t, cs, StepDriver, "/dev/nvidia1"), Fail, "195:1", "195:9", "nvidia-modprobe")
			expect(t, find(t, cs, StepDriver, "/dev/nvidia2"), Warn, "missing", "nvidia-modprobe -c=")
			expect(t, find(t, cs, StepDriver, "device nodes"), OK, fmt.Sprintf("%d of %d nodes", want-2, want))
		})
	}
}

func TestDriverChecksNoUVM(t *testing.T) {
	inv := simulated(t, "pcie8", nil)
	procDevices, devRoot := fakeKernel(t, inv, false)
	inv.Problems = []string{"the nvidia-uvm kernel module is not loaded"}
	cs := driverChecks(inv, nil, procDevices, devRoot)
	expect(t, find(t, cs, StepDriver, "kernel module nvidia-uvm"), Warn, "no nvidia-uvm", "nvidia-modprobe -u -c=0")
	for _, c := range cs {
		if c.Name == "driver problem" && strings.Contains(c.Detail, "nvidia-uvm") {
			t.Errorf("nvidia-uvm reported twice: %v", c)
		}
	}
}

func TestDriverChecksNoDriverModule(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "devices")
	must(t, os.WriteFile(path, []byte("Character devices:\n  1 mem\n"), 0o644))
	inv := simulated(t, "dgxa100", nil)
	cs := driverChecks(inv, nil, path, dir)
	expect(t, find(t, cs, StepDriver, "kernel module nvidia"), Fail, "not loaded", "modprobe nvidia")
	cs = driverChecks(inv, nil, filepath.Join(dir, "missing"), dir)
	expect(t, find(t, cs, StepDriver, "kernel"), Fail, "device majors")
}

// TestRunChecksAFakeKernel: a simulated node's kernel view is checked
// against a fake /dev and /proc/devices when given, else skipped.
func TestRunChecksAFakeKernel(t *testing.T) {
	inv := simulated(t, "dgxa100", nil)
	procDevices, devRoot := fakeKernel(t, inv, true)
	socket := filepath.Join(t.TempDir(), "none.sock")
	cfg := Config{Inventory: inv, Socket: socket, Daemon: api.NewClient(socket), CDIDir: t.TempDir()}
	expect(t, find(t, Run(context.Background(), cfg).Checks, StepDriver, "kernel"), Skip, "simulated")

	cfg.DevRoot, cfg.DevRootSet, cfg.ProcDevices = devRoot, true, procDevices
	cs := Run(context.Background(), cfg).Checks
	expect(t, find(t, cs, StepDriver, "kernel module nvidia"), OK, "major 195")
	expect(t, find(t, cs, StepDriver, "device nodes"), OK, filepath.Join(devRoot, "dev"))
}

// TestRunSimulatedWithoutNVML: a simulation that could not be read is still
// not checked against the host's kernel, which has no driver for it.
func TestRunSimulatedWithoutNVML(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	cs := Run(context.Background(), Config{Simulate: "dgxa100", InventoryErr: errors.New("hotgpu-cdi not found"),
		Socket: socket, Daemon: api.NewClient(socket), CDIDir: t.TempDir()}).Checks
	expect(t, find(t, cs, StepDriver, "nvml"), Fail, "hotgpu-cdi not found")
	expect(t, find(t, cs, StepDriver, "kernel"), Skip, "simulated")
}
