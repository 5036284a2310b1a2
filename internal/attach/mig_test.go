package attach

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// mixedMIG is the simulated dgxa100 with GPU 0 in MIG mode in mixed
// profiles: 0:0 3g.20gb, 0:1 2g.10gb, 0:2 and 0:3 1g.5gb.
func mixedMIG(t *testing.T) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	must(t, err)
	defer p.Close()
	must(t, p.Simulation().EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"))
	inv, err := p.Inventory()
	must(t, err)
	return inv
}

func newMIGManager(t *testing.T, s *sandbox, inv *gpu.Inventory) (*Manager, *ledger.Ledger) {
	t.Helper()
	store, err := ledger.NewFileStore(t.TempDir())
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	l.SetOverlaps(inv.Overlapping)
	reg := registry.New()
	reg.Put(registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p",
		PID: s.proc.Process.Pid, CgroupsPath: s.cgroup})
	log := logrus.New()
	log.SetOutput(io.Discard)
	return New(staticInv{inv}, allHealthy{}, l, reg, logrus.NewEntry(log)), l
}

func capsNode(t *testing.T, inv *gpu.Inventory, name string, i int) gpu.DeviceNode {
	t.Helper()
	g, err := inv.Lookup(name)
	must(t, err)
	return g.Instance.Caps[i]
}

// A MIG device attached live is the parent's node plus exactly its own
// capability nodes, one rule each; a sibling's capability node made inside
// is refused; detaching one of two siblings keeps the parent's node.
func TestAttachDetachMIGRealCgroup(t *testing.T) {
	s := newSandbox(t)
	inv := mixedMIG(t)
	m, l := newMIGManager(t, s, inv)
	target := Target{PodNamespace: "ml", PodName: "p"}

	res, err := m.Attach(target, []string{"0:2"}, 0)
	must(t, err)
	if len(res.GPUs) != 1 || res.GPUs[0].ID() != "0:2" || res.GPUs[0].UUID != inv.GPUs[0].MIG[2].UUID {
		t.Fatalf("attached %+v, want MIG device 0:2", res.GPUs)
	}
	own := inv.GPUs[0].MIG[2].Caps
	for _, n := range append([]gpu.DeviceNode{inv.GPUs[0].Node()}, own...) {
		if got := s.open(n.Path); got != "ENXIO" {
			t.Errorf("open %s = %s, want ENXIO (allowed, no driver)", n.Path, got)
		}
	}
	list := s.devicesList()
	for _, n := range append([]gpu.DeviceNode{inv.GPUs[0].Node()}, own...) {
		if !strings.Contains(list, n.Rule()) {
			t.Errorf("devices.list lacks %q: %q", n.Rule(), list)
		}
	}
	for _, rule := range strings.Split(strings.TrimSpace(list), "\n") {
		if strings.Contains(rule, "*") && rule != "c *:* m" && rule != "b *:* m" {
			t.Fatalf("devices.list = %q: want one rule per node, no wildcard", list)
		}
	}
	sibling := capsNode(t, inv, "0:3", 0)
	if got := s.open(sibling.Path); got != "ENOENT" {
		t.Fatalf("sibling 0:3's caps node visible: %s", got)
	}
	must(t, s.command("mkdir", "-p", "/dev/nvidia-caps").Run())
	must(t, s.command("mknod", sibling.Path, "c", fmt.Sprint(sibling.Major), fmt.Sprint(sibling.Minor)).Run())
	if got := s.open(sibling.Path); got != "EPERM" {
		t.Fatalf("sibling's caps node made inside: open = %s, want EPERM", got)
	}
	must(t, s.command("rm", sibling.Path).Run())

	// the parent is busy while its instance is held
	if _, err := m.Attach(Target{ContainerID: "c0ffee"}, []string{"0"}, 0); err == nil {
		t.Fatal("attached GPU 0 whole while its MIG device 0:2 is held")
	}
	// a second instance by profile: the free 1g.5gb is 0:3
	res, err = m.AttachMIG(target, "1g.5gb", 1)
	must(t, err)
	if res.GPUs[0].ID() != "0:3" {
		t.Fatalf("AttachMIG(1g.5gb) = %s, want 0:3", res.GPUs[0].ID())
	}
	if _, err := m.AttachMIG(target, "1g.5gb", 1); err == nil {
		t.Fatal("a third 1g.5gb attached; there are two")
	}
	// the reconcile loop takes the parent's node for what it is: the
	// instances' (the ledger does not give the container GPU 0 itself)
	if n, err := m.RevokeStrays(""); err != nil || n != 0 {
		t.Fatalf("RevokeStrays = %d, %v; want nothing revoked", n, err)
	}

	_, err = m.Detach(target, []string{inv.GPUs[0].MIG[2].UUID}, false)
	must(t, err)
	if got := s.open(inv.GPUs[0].Node().Path); got != "ENXIO" {
		t.Fatalf("parent node after detaching one of two siblings: %s, want ENXIO", got)
	}
	if got := s.open(sibling.Path); got != "ENXIO" {
		t.Fatalf("0:3's caps node after detaching 0:2: %s, want ENXIO", got)
	}
	for _, n := range own {
		if got := s.open(n.Path); got != "ENOENT" {
			t.Fatalf("0:2's caps node %s after its detach: %s, want ENOENT", n.Path, got)
		}
	}
	must(t, s.command("mknod", own[0].Path, "c", fmt.Sprint(own[0].Major), fmt.Sprint(own[0].Minor)).Run())
	if got := s.open(own[0].Path); got != "EPERM" {
		t.Fatalf("detached caps node made inside: %s, want EPERM", got)
	}
	must(t, s.command("rm", own[0].Path).Run())

	_, err = m.Detach(target, []string{"0:3"}, false)
	must(t, err)
	if got := s.open(inv.GPUs[0].Node().Path); got != "ENOENT" {
		t.Fatalf("parent node after the last instance's detach: %s, want ENOENT", got)
	}
	if list := s.devicesList(); strings.Contains(list, "195:0 ") || strings.Contains(list, fmt.Sprintf("%d:", sibling.Major)) {
		t.Fatalf("devices.list after detach = %q", list)
	}
	if len(l.Grants()) != 0 {
		t.Fatalf("ledger after detach: %v", l.Grants())
	}
}

// The same on cgroup v2: the eBPF program that replaces the container's
// allows the MIG device's caps nodes and its GPU's node, one by one, and a
// sibling's caps node made inside is refused.
func TestAttachDetachMIGCgroupV2(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	s := newV2Sandbox(t)
	inv := mixedMIG(t)
	store, err := ledger.NewFileStore(t.TempDir())
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	l.SetOverlaps(inv.Overlapping)
	reg := registry.New()
	reg.Put(registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p", PID: s.pid(), CgroupsPath: s.cgroup})
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := New(staticInv{inv}, allHealthy{}, l, reg, logrus.NewEntry(log))
	target := Target{ContainerID: "c0ffee1234567890"}

	_, err = m.Attach(target, []string{"0:1"}, 0)
	must(t, err)
	own, sibling := inv.GPUs[0].MIG[1].Caps, inv.GPUs[0].MIG[2].Caps[0]
	for _, n := range append([]gpu.DeviceNode{inv.GPUs[0].Node()}, own...) {
		if got := s.open(n.Path); got != "ENXIO" {
			t.Errorf("open %s = %s, want ENXIO", n.Path, got)
		}
	}
	must(t, s.command("mkdir", "-p", "/dev/nvidia-caps").Run())
	must(t, s.command("mknod", sibling.Path, "c", fmt.Sprint(sibling.Major), fmt.Sprint(sibling.Minor)).Run())
	if got := s.open(sibling.Path); got != "EPERM" {
		t.Errorf("sibling's caps node made inside: %s, want EPERM", got)
	}
	if n, err := m.Reconcile(""); err != nil || n != 0 {
		t.Fatalf("reconcile of an intact MIG grant re-applied %d: %v", n, err)
	}
	_, err = m.Detach(target, []string{"0:1"}, false)
	must(t, err)
	for _, n := range own {
		if got := s.open(n.Path); got != "ENOENT" {
			t.Errorf("after detach, open %s = %s, want ENOENT", n.Path, got)
		}
	}
	must(t, s.command("mknod", own[0].Path, "c", fmt.Sprint(own[0].Major), fmt.Sprint(own[0].Minor)).Run())
	if got := s.open(own[0].Path); got != "EPERM" {
		t.Errorf("detached caps node made inside: %s, want EPERM", got)
	}
	if got := s.open("/dev/null"); got != "ok" {
		t.Errorf("base rules lost: open /dev/null = %s", got)
	}
}
