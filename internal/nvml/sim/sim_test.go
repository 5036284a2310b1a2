package sim

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// plainNames names GPU-instance profiles by their NVML index ("p0" is
// GPU_INSTANCE_PROFILE_1_SLICE): the Sim takes names from its reader.
func plainNames(gi int, _, _ uint64) (string, error) { return fmt.Sprintf("p%d", gi), nil }

func newSim(t *testing.T) *Sim {
	t.Helper()
	s, err := New("dgxa100", &sync.Mutex{}, plainNames)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func migCount(t *testing.T, s *Sim, slot int) int {
	t.Helper()
	d, ret := s.Library().DeviceGetHandleByIndex(slot)
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	n := 0
	for i := range maxMIGDevices {
		if _, ret := d.GetMigDeviceHandleByIndex(i); ret == nvml.SUCCESS {
			n++
		}
	}
	return n
}

func TestUnknownPresetAndProfile(t *testing.T) {
	if _, err := New("dgx-h200", &sync.Mutex{}, plainNames); err == nil {
		t.Fatal("unknown preset accepted")
	}
	s := newSim(t)
	if err := s.EnableMIG("0", "nope"); err == nil {
		t.Fatal("unknown profile accepted")
	}
	if err := s.EnableMIG("9", "p0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GPU 9: %v, want ErrNotFound", err)
	}
}

// A watcher registered for events hears of every MIG layout change, as
// NVML's EventMigConfigChange; instances left alone keep their handles.
func TestMIGLayoutChangesAreEvents(t *testing.T) {
	s := newSim(t)
	set, _ := s.Library().EventSetCreate()
	d, _ := s.Library().DeviceGetHandleByIndex(0)
	if ret := d.RegisterEvents(nvml.EventMigConfigChange, set); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	wait := func(what string) {
		t.Helper()
		e, ret := set.Wait(5000)
		if ret != nvml.SUCCESS || e.EventType != nvml.EventMigConfigChange || e.Device != d {
			t.Fatalf("%s: event %+v, %v; want a MIG config change of GPU 0", what, e, ret)
		}
	}
	if err := s.EnableMIG("0", "p0", "p0", "p0"); err != nil {
		t.Fatal(err)
	}
	wait("instances created")
	if n := migCount(t, s, 0); n != 3 {
		t.Fatalf("%d MIG devices, want 3", n)
	}
	kept, _ := d.GetMigDeviceHandleByIndex(2)
	keptUUID, _ := kept.GetUUID()
	first, _ := d.GetMigDeviceHandleByIndex(0)
	gi, _ := first.GetGpuInstanceId()
	if err := s.DestroyInstance("0", gi); err != nil {
		t.Fatal(err)
	}
	wait("an instance destroyed")
	if n := migCount(t, s, 0); n != 2 {
		t.Fatalf("%d MIG devices after destroying one, want 2", n)
	}
	last, _ := d.GetMigDeviceHandleByIndex(1)
	if u, _ := last.GetUUID(); u != keptUUID {
		t.Fatalf("a kept instance changed UUID: %s -> %s", keptUUID, u)
	}
	if err := s.DestroyInstance("0", gi); !errors.Is(err, ErrNotFound) {
		t.Fatalf("destroying it again: %v, want ErrNotFound", err)
	}
	if err := s.DisableMIG("0"); err != nil {
		t.Fatal(err)
	}
	wait("MIG disabled")
}
