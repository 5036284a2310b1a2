package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// fakeDriverProc lays out /proc/driver/nvidia with one information file
// per bus id, and /proc/devices.
func fakeDriverProc(t *testing.T, infos map[string]string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	for bus, info := range infos {
		writeFile(t, filepath.Join(dir, "gpus", bus, "information"), info)
	}
	writeFile(t, filepath.Join(dir, "devices"), "Character devices:\n195 nvidia\n508 nvidia-uvm\n")
	return dir
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(s), 0o644))
}

const unreadUUID = "GPU-????????-????-????-????-????????????"

func info(uuid, minor, excluded string) string {
	return "Model: \t NVIDIA A100-SXM4-40GB\nGPU UUID: \t " + uuid + "\nBus Type: \t PCIe\nDevice Minor: \t " + minor + "\nGPU Excluded:\t " + excluded + "\n"
}

// TestProcInventoryUnknownUUIDsAndExcludedGPUs: a UUID the driver has not
// read yet is unknown, not an identity two GPUs share; an excluded GPU is
// not enumerated, and the others keep NVML's indices.
func TestProcInventoryUnknownUUIDsAndExcludedGPUs(t *testing.T) {
	dir := fakeDriverProc(t, map[string]string{
		"0000:07:00.0": info(unreadUUID, "0", "No"),
		"0000:0f:00.0": info("GPU-0f0f0f0f-0000-0000-0000-000000000000", "1", "Yes"),
		"0000:47:00.0": info(unreadUUID, "2", "No"),
	})
	inv, err := procInventory{driverProc: dir, procDevices: filepath.Join(dir, "devices")}.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range inv.GPUs {
		got = append(got, g.PCIBusID+"="+g.UUID)
	}
	if want := []string{"0000:07:00.0=", "0000:47:00.0="}; !slices.Equal(got, want) {
		t.Fatalf("GPUs = %v, want %v (the excluded GPU left out, unread UUIDs empty)", got, want)
	}
	if inv.GPUs[1].Index != 1 || inv.GPUs[1].Minor != 2 {
		t.Errorf("second GPU = %+v, want index 1, minor 2", inv.GPUs[1])
	}
	if found, err := inv.LookupAll([]string{"0", "1"}); err != nil || len(found) != 2 {
		t.Errorf("two GPUs with unread UUIDs: LookupAll = %v, %v", found, err)
	}
	if _, err := inv.Lookup(unreadUUID); err == nil {
		t.Error("the placeholder UUID named a GPU")
	}
}

// TestProcInventoryRefusesMIGEnabledGPUs: a GPU with MIG instances is
// marked, and refused as a whole GPU.
func TestProcInventoryRefusesMIGEnabledGPUs(t *testing.T) {
	dir := fakeDriverProc(t, map[string]string{
		"0000:07:00.0": info("GPU-aaaaaaaa-0000-0000-0000-000000000000", "0", "No"),
		"0000:0f:00.0": info("GPU-bbbbbbbb-0000-0000-0000-000000000000", "1", "No"),
	})
	writeFile(t, filepath.Join(dir, "capabilities/gpu1/mig/gi3/access"), "DeviceFileMinor: 30\n")
	must(t, os.MkdirAll(filepath.Join(dir, "capabilities/gpu0/mig"), 0o755)) // MIG capable, no instances
	inv, err := procInventory{driverProc: dir, procDevices: filepath.Join(dir, "devices")}.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if inv.GPUs[0].MIGEnabled || !inv.GPUs[1].MIGEnabled {
		t.Fatalf("MIG enabled = %v, %v; want false, true", inv.GPUs[0].MIGEnabled, inv.GPUs[1].MIGEnabled)
	}
	if err := wholeGPUs(inv.GPUs[:1]); err != nil {
		t.Errorf("GPU 0 refused: %v", err)
	}
	if err := wholeGPUs(inv.GPUs); !errors.Is(err, ErrMIGEnabled) {
		t.Errorf("MIG-enabled GPU 1 granted whole: err = %v", err)
	}
}

// TestProcInventoryModesetWhenPresent: /dev/nvidia-modeset is a control
// node only where the host has it.
func TestProcInventoryModesetWhenPresent(t *testing.T) {
	dir := fakeDriverProc(t, map[string]string{"0000:07:00.0": info("GPU-aaaaaaaa-0000-0000-0000-000000000000", "0", "No")})
	modeset := gpu.DeviceNode{Path: "/dev/nvidia-modeset", Major: gpu.NvidiaMajor, Minor: 254}
	for _, present := range []bool{false, true} {
		root := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(root, "dev"), 0o755))
		if present {
			writeFile(t, filepath.Join(root, "dev/nvidia-modeset"), "")
		}
		inv, err := procInventory{driverProc: dir, procDevices: filepath.Join(dir, "devices"), devRoot: root}.Inventory()
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(inv.Control, modeset); got != present {
			t.Errorf("host has nvidia-modeset: %v; control nodes %v", present, inv.Control)
		}
	}
}

// TestStandaloneRefusesMIGEnabledGPUs: the standalone hook, reading the
// driver's procfs, refuses a MIG-enabled GPU asked by id (its CUDA would
// find no device) and leaves it out of "all".
func TestStandaloneRefusesMIGEnabledGPUs(t *testing.T) {
	dir := fakeDriverProc(t, map[string]string{
		"0000:07:00.0": info("GPU-aaaaaaaa-0000-0000-0000-000000000000", "0", "No"),
		"0000:0f:00.0": info("GPU-bbbbbbbb-0000-0000-0000-000000000000", "1", "No"),
	})
	writeFile(t, filepath.Join(dir, "capabilities/gpu1/mig/gi3/access"), "DeviceFileMinor: 30\n")
	var log strings.Builder
	p := NewStandalone("", false, &log).WithDriverProc(dir, filepath.Join(dir, "devices"))
	c := &container{state: oci.State{ID: "c1", Pid: 1234}}
	res, _, err := p.reserve(context.Background(), c, gpuRequest{IDs: []string{"1"}}, "/c1")
	if !errors.Is(err, ErrMIGEnabled) || res != nil {
		t.Errorf("MIG-enabled GPU 1 asked by index: %v, err %v; want ErrMIGEnabled", res, err)
	}
	res, _, err = p.reserve(context.Background(), c, gpuRequest{All: true}, "/c1")
	if err != nil || len(res.GPUs) != 1 || res.GPUs[0].Index != 0 {
		t.Errorf("all: %v, err %v; want GPU 0 alone", res, err)
	}
	if !strings.Contains(log.String(), "MIG") {
		t.Errorf("the GPU left out of all is not logged: %q", log.String())
	}
}
