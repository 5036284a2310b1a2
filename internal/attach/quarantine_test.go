package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// detach --force of a GPU a process still holds takes it from the
// container but quarantines it: attach refuses it, saying why, until the
// holder lets go and LiftQuarantines frees it.
func TestForceDetachQuarantinesHeldGPU(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	target := Target{ContainerID: "c0ffee1234567890"}
	_, err := m.Attach(target, []string{"1"}, 0)
	must(t, err)
	h := passedFdHolder(t, s, filepath.Join(s.root, "dev", "nvidia1"))
	uuid := testInventory().GPUs[1].UUID

	res, err := m.Detach(target, []string{"1"}, true)
	must(t, err)
	if len(res.Quarantined) != 1 || res.Quarantined[0].UUID != uuid {
		t.Fatalf("detach --force quarantined %v, want GPU 1", res.Quarantined)
	}
	g, ok := l.Lookup(uuid)
	if !ok || g.Reason != ledger.Quarantine || g.Holder.ContainerID != "" || !strings.Contains(g.Note, fmt.Sprint(h.pid())) {
		t.Fatalf("ledger after detach --force: %+v, %v; want a quarantine naming pid %d", g, ok, h.pid())
	}
	if got := s.open("/dev/nvidia1"); got != "ENOENT" {
		t.Errorf("container still has the GPU after detach --force: %s", got)
	}
	_, err = m.Attach(target, []string{"1"}, 0)
	if err == nil || !strings.Contains(err.Error(), "quarantine") || !strings.Contains(err.Error(), fmt.Sprint(h.pid())) {
		t.Fatalf("attach of the quarantined GPU: %v; want refused as quarantined, naming the holder", err)
	}
	if _, err := m.Attach(target, nil, 4); err == nil {
		t.Fatal("attach of every GPU counted the quarantined one as free")
	}
	if lifted, err := m.LiftQuarantines(); err != nil || len(lifted) != 0 {
		t.Fatalf("LiftQuarantines while held = %v, %v", lifted, err)
	}

	h.stop()
	lifted, err := m.LiftQuarantines()
	if err != nil || len(lifted) != 1 || lifted[0].GPU != uuid {
		t.Fatalf("LiftQuarantines after the holder exited = %v, %v", lifted, err)
	}
	if _, err := m.Attach(target, []string{"1"}, 0); err != nil {
		t.Fatalf("attach after the quarantine was lifted: %v", err)
	}
}

// A GPU the ledger does not give the container, which something allowed
// again in its cgroup after hotgpu detached it, is revoked again; a GPU its
// own spec allows is left alone.
func TestRevokeStraysReRevokesRegrantedGPU(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	c, _ := m.registry.Get("c0ffee1234567890")
	c.Rules = []registry.DeviceRule{{Allow: true, Type: "c", Major: ptr(int64(195)), Minor: ptr(int64(2)), Access: "rw"}}
	m.registry.Put(c)
	allow := filepath.Join(devicesRoot, s.cgroup, "devices.allow")
	must(t, os.WriteFile(allow, []byte("c 195:2 rw"), 0))
	target := Target{ContainerID: c.ID}
	_, err := m.Attach(target, []string{"1"}, 0)
	must(t, err)
	_, err = m.Detach(target, []string{"1"}, false)
	must(t, err)
	if n, err := m.RevokeStrays(""); err != nil || n != 0 {
		t.Fatalf("RevokeStrays with nothing re-granted = %d, %v", n, err)
	}

	must(t, os.WriteFile(allow, []byte("c 195:1 rwm"), 0)) // what a runtime or unit reset does
	must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
	if got := s.open("/dev/nvidia1"); got != "ENXIO" {
		t.Fatalf("setup: re-granted GPU opens with %s", got)
	}
	n, err := m.RevokeStrays("")
	if err != nil || n != 1 {
		t.Fatalf("RevokeStrays = %d, %v; want 1", n, err)
	}
	if got := s.open("/dev/nvidia1"); got != "EPERM" {
		t.Errorf("re-granted GPU after RevokeStrays: %s, want EPERM", got)
	}
	if list := s.devicesList(); !strings.Contains(list, "c 195:2 rw") {
		t.Errorf("the spec's own GPU rule was revoked: %q", list)
	}
	if len(l.Grants()) != 0 {
		t.Errorf("ledger changed: %v", l.Grants())
	}
}

func ptr[T any](v T) *T { return &v }

// driverInv is an inventory whose driver reports a process on GPU 2 that
// /proc does not show holding its node.
type driverInv struct {
	staticInv
	pid int
}

func (d driverInv) Processes(uuid string) ([]int, error) {
	if uuid == testInventory().GPUs[2].UUID {
		return []int{d.pid}, nil
	}
	return nil, nil
}

// A process the driver reports on a GPU makes detach refuse it, as an open
// fd does.
func TestDetachAsksTheDriver(t *testing.T) {
	s := newSandbox(t)
	m, _ := newManager(t, s, t.TempDir())
	m.inv = driverInv{staticInv{testInventory()}, s.proc.Process.Pid}
	target := Target{ContainerID: "c0ffee1234567890"}
	_, err := m.Attach(target, []string{"1", "2"}, 0)
	must(t, err)
	if _, err := m.Detach(target, []string{"2"}, false); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprint(s.proc.Process.Pid)) {
		t.Fatalf("detach of a GPU the driver says is in use: %v; want ErrBusy naming the process", err)
	}
	if _, err := m.Detach(target, []string{"1"}, false); err != nil {
		t.Fatalf("detach of a GPU nobody uses: %v", err)
	}
}
