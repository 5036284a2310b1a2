package attach

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// After a corrupt state file the ledger starts empty; Adopt finds the GPU
// that was attached live in the container's cgroup and records it again,
// and leaves alone what the container's spec granted and unconfined cgroups.
func TestAdoptRecoversLiveGrants(t *testing.T) {
	s := newSandbox(t)
	m, _ := newManager(t, s, t.TempDir())
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0)
	must(t, err)
	// GPU 3 came with the container's spec (NRI injection), not live attach.
	must(t, os.WriteFile(filepath.Join(devicesRoot, s.cgroup, "devices.allow"), []byte("c 195:3 rwm"), 0))

	fresh, l := newManager(t, s, t.TempDir()) // the rebuilt, empty ledger
	three := int64(3)
	major := int64(195)
	c, _ := fresh.registry.Get("c0ffee1234567890")
	c.Rules = []registry.DeviceRule{{Allow: true, Type: "c", Major: &major, Minor: &three, Access: "rwm"}}
	fresh.registry.Put(c)

	adopted, conflicts, unreadable := fresh.Adopt(fresh.registry.List())
	if len(adopted) != 1 || conflicts != 0 || unreadable != 0 {
		t.Fatalf("adopted %v, %d conflicts, %d unreadable; want GPU 2 only", adopted, conflicts, unreadable)
	}
	g, ok := l.Lookup(testInventory().GPUs[2].UUID)
	if !ok || g.Reason != ledger.Attach || g.Holder.ContainerID != "c0ffee1234567890" {
		t.Fatalf("GPU 2 grant = %+v", g)
	}
	if _, ok := l.Lookup(testInventory().GPUs[3].UUID); ok {
		t.Fatal("adopted a GPU the container's spec granted")
	}
	// The adopted grant is a real one: detach works and takes the access
	// away. Its node stays: the ledger that recorded it as hotgpu's is lost,
	// and hotgpu removes only nodes it can prove it made.
	_, err = fresh.Detach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, false)
	must(t, err)
	if got := s.open("/dev/nvidia2"); got != "EPERM" {
		t.Fatalf("after detach of the adopted GPU: %s, want EPERM (node kept, access gone)", got)
	}
}

func TestAdoptSkipsUnconfinedCgroups(t *testing.T) {
	s := newSandbox(t)
	must(t, os.WriteFile(filepath.Join(devicesRoot, s.cgroup, "devices.allow"), []byte("a"), 0)) // privileged
	m, l := newManager(t, s, t.TempDir())
	if adopted, _, _ := m.Adopt(m.registry.List()); len(adopted) != 0 || len(l.Grants()) != 0 {
		t.Fatalf("adopted %v from a privileged container", adopted)
	}
}
