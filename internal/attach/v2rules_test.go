package attach

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// fuse is a device a container's spec allows besides runc's defaults
// (docker run --device /dev/fuse).
func fuse() specs.LinuxDeviceCgroup { return charRule(10, 229) }

// managerWith is a Manager on l whose registry holds cs: empty for a
// container outside NRI, or before the first Synchronize after a restart.
func managerWith(t *testing.T, l *ledger.Ledger, cs ...registry.Container) *Manager {
	t.Helper()
	reg := registry.New()
	for _, c := range cs {
		reg.Put(c)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return New(staticInv{testInventory()}, allHealthy{}, l, reg, logrus.NewEntry(log))
}

func newLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	store, err := ledger.NewFileStore(t.TempDir())
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	return l
}

// expectOpen checks what opening each path inside the sandbox gives.
func (s *v2Sandbox) expectOpen(when string, want map[string]string) {
	s.t.Helper()
	for p, w := range want {
		if got := s.openOnly(p); got != w {
			s.t.Errorf("%s: open %s = %s, want %s", when, p, got, w)
		}
	}
}

// A container outside NRI, attached by pid, keeps the devices of its own
// spec (read from its bundle) through attach and detach: FUSE, and a GPU it
// was created with (ctr run --device nvidia.com/gpu=2), which hotgpu refuses
// to attach again since it could not take it away.
func TestCgroupV2AttachByPIDKeepsOwnDevices(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	s := newV2SandboxSpec(t, []specs.LinuxDeviceCgroup{fuse(), charRule(195, 2), charRule(195, 255)}, true)
	must(t, s.command("mknod", "/dev/nvidia2", "c", "195", "2").Run())
	l := newLedger(t)
	m := managerWith(t, l)
	own := map[string]string{"/dev/fuse": "ok", "/dev/null": "ok", "/dev/nvidia2": "ENXIO"}
	s.expectOpen("before attach", own)

	res, err := m.Attach(Target{PID: s.pid()}, []string{"1"}, 0)
	must(t, err)
	s.expectOpen("after attach", own)
	s.expectOpen("after attach", map[string]string{"/dev/nvidia1": "ENXIO", "/dev/nvidiactl": "ENXIO"})
	if _, err := m.Attach(Target{PID: s.pid()}, []string{"2"}, 0); err == nil || !strings.Contains(err.Error(), "already allowed") {
		t.Errorf("attach of the GPU of the container's spec = %v, want a refusal", err)
	}

	_, err = m.Detach(Target{PID: s.pid()}, []string{res.GPUs[0].UUID}, false)
	must(t, err)
	must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
	s.expectOpen("after detach", own)
	s.expectOpen("after detach", map[string]string{"/dev/nvidia1": "EPERM"})
	if g := l.Grants(); len(g) != 0 {
		t.Errorf("ledger after detach: %v", g)
	}
}

func charRule(major, minor int64) specs.LinuxDeviceCgroup {
	return specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}
}

// After a restart, before NRI's first Synchronize fills the registry, the
// holder is found by its cgroup: a reconcile re-applying a reset grant and
// crash recovery rolling back an interrupted detach both rebuild the program
// from the container's bundle, keeping its own devices.
func TestCgroupV2RestartKeepsOwnDevices(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	s := newV2SandboxSpec(t, []specs.LinuxDeviceCgroup{fuse()}, true)
	l := newLedger(t)
	c := registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p", PodUID: "uid-p",
		PID: s.pid(), CgroupsPath: s.cgroup}
	res, err := managerWith(t, l, c).Attach(Target{ContainerID: c.ID}, []string{"1"}, 0)
	must(t, err)

	restarted := managerWith(t, l)
	must(t, cgroups.DevicesSetV2(s.dir, &cgroups.Resources{Devices: s.runc})) // the runtime resets it
	s.expectOpen("after the runtime's reset", map[string]string{"/dev/nvidia1": "EPERM", "/dev/fuse": "ok"})
	if n, err := restarted.Reconcile(""); err != nil || n == 0 {
		t.Fatalf("reconcile before Synchronize re-applied %d grants: %v", n, err)
	}
	s.expectOpen("after reconcile", map[string]string{"/dev/nvidia1": "ENXIO", "/dev/fuse": "ok", "/dev/null": "ok"})

	// A detach was interrupted after marking the grant; hotgpud restarts.
	must(t, l.SetState(c.ID, ledger.Pending, res.GPUs[0].UUID))
	undone, err := managerWith(t, l).Recover()
	must(t, err)
	if len(undone) != 1 {
		t.Fatalf("recover undid %v, want the one interrupted grant", undone)
	}
	must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
	s.expectOpen("after recovery", map[string]string{"/dev/nvidia1": "EPERM", "/dev/fuse": "ok", "/dev/null": "ok"})
}

// A container whose own rules cannot be found (outside NRI, no bundle) is
// refused and left as it was, by attach and by crash recovery.
func TestCgroupV2RefusesUnknownRules(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	s := newV2SandboxSpec(t, []specs.LinuxDeviceCgroup{fuse()}, false)
	l := newLedger(t)
	m := managerWith(t, l)
	progs := s.programs()
	_, err := m.Attach(Target{PID: s.pid()}, []string{"1"}, 0)
	if err == nil || !strings.Contains(err.Error(), "own devices") {
		t.Fatalf("attach to a container of unknown rules = %v, want a refusal that says why", err)
	}
	if now := s.programs(); !slices.Equal(now, progs) {
		t.Errorf("a refused attach changed the programs: %v -> %v", progs, now)
	}
	if g := l.Grants(); len(g) != 0 {
		t.Errorf("a refused attach left grants: %v", g)
	}
	s.expectOpen("after the refusal", map[string]string{"/dev/fuse": "ok", "/dev/nvidia1": "ENOENT"})

	// An interrupted attach of such a container is kept, not released with
	// its cgroup half done, until its rules are known.
	h := ledger.Holder{ContainerID: "c0ffee1234567890", PID: s.pid(), Cgroup: s.cgroup}
	must(t, l.Acquire(h, ledger.Attach, ledger.Pending, testInventory().GPUs[1].UUID))
	undone, err := managerWith(t, l).Recover()
	if err != nil || len(undone) != 0 {
		t.Errorf("recover of a container of unknown rules undid %v (%v), want it kept", undone, err)
	}
	if g := l.Grants(); len(g) != 1 || g[0].State != ledger.Pending {
		t.Errorf("ledger after recover: %v, want the Pending grant kept", g)
	}
	if now := s.programs(); !slices.Equal(now, progs) {
		t.Errorf("recover changed the programs: %v -> %v", progs, now)
	}
	s.expectOpen("after recover", map[string]string{"/dev/fuse": "ok"})

	// Once NRI reports the container's rules, a reconcile rolls it back.
	c := registry.Container{ID: h.ContainerID, PID: s.pid(), CgroupsPath: s.cgroup, Rules: []registry.DeviceRule{
		{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: fuse().Major, Minor: fuse().Minor, Access: "rwm"}}}
	if _, err := managerWith(t, l, c).Reconcile(""); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if g := l.Grants(); len(g) != 0 {
		t.Errorf("ledger after reconcile with known rules: %v, want the Pending grant rolled back", g)
	}
	s.expectOpen("after the roll-back", map[string]string{"/dev/fuse": "ok", "/dev/null": "ok"})
}

// A detach that a wider rule of the container's own spec would defeat
// ("c 195:* rwm") is reported, and the ledger keeps the GPU attached.
func TestCgroupV2DetachReportsWiderRule(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	major := int64(195)
	wide := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Access: "rwm"}
	s := newV2SandboxSpec(t, []specs.LinuxDeviceCgroup{wide}, false)
	l := newLedger(t)
	c := registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p", PodUID: "uid-p",
		PID: s.pid(), CgroupsPath: s.cgroup,
		Rules: []registry.DeviceRule{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Access: "rwm"}}}
	m := managerWith(t, l, c)
	res, err := m.Attach(Target{ContainerID: c.ID}, []string{"1"}, 0)
	must(t, err)
	progs := s.programs()

	_, err = m.Detach(Target{ContainerID: c.ID}, []string{res.GPUs[0].UUID}, false)
	if err == nil || !strings.Contains(err.Error(), "c 195:* rwm") {
		t.Fatalf("detach under c 195:* rwm = %v, want an error naming the rule", err)
	}
	if g := l.Grants(); len(g) != 1 || g[0].State != ledger.Active {
		t.Errorf("ledger after the refused detach: %v, want GPU 1 still attached", g)
	}
	if now := s.programs(); !slices.Equal(now, progs) {
		t.Errorf("the refused detach changed the programs: %v -> %v", progs, now)
	}
	s.expectOpen("after the refused detach", map[string]string{"/dev/nvidia1": "ENXIO"})
}
