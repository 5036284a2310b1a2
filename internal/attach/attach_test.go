package attach

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

const devicesRoot = "/sys/fs/cgroup/devices"

type staticInv struct{ inv *gpu.Inventory }

func (s staticInv) Inventory() *gpu.Inventory { return s.inv }

type allHealthy struct{}

func (allHealthy) Healthy(string) bool { return true }

func testInventory() *gpu.Inventory {
	inv := &gpu.Inventory{Control: []gpu.DeviceNode{
		{Path: "/dev/nvidiactl", Major: 195, Minor: 255},
		{Path: "/dev/nvidia-uvm", Major: 511, Minor: 0},
	}}
	for i := 0; i < 4; i++ {
		inv.GPUs = append(inv.GPUs, gpu.GPU{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08d-aaaa-bbbb-cccc-000000000000", i)})
	}
	return inv
}

// sandbox is a stand-in container: a busybox process chrooted into its own
// root, in its own cgroup v1 devices cgroup that denies everything but
// /dev/null — what runc sets up, minus the namespaces.
type sandbox struct {
	t      testing.TB
	root   string
	cgroup string // relative to the devices hierarchy
	proc   *exec.Cmd
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: creates cgroups and chroots")
	}
	if _, err := os.Stat(filepath.Join(devicesRoot, "devices.allow")); err != nil {
		testenv.Skipf(t, "needs a cgroup v1 devices hierarchy at %s", devicesRoot)
	}
	busybox := testenv.LookPath(t, "busybox", "apt-get install busybox-static")
	s := &sandbox{t: t, root: filepath.Join(t.TempDir(), "root"), cgroup: fmt.Sprintf("/hotgpu-attach-test-%d", time.Now().UnixNano())}
	must(t, os.MkdirAll(filepath.Join(s.root, "dev"), 0o755))
	data, err := os.ReadFile(busybox)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(s.root, "busybox"), data, 0o755))
	dir := filepath.Join(devicesRoot, s.cgroup)
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "devices.deny"), []byte("a"), 0))
	for _, rule := range []string{"c *:* m", "b *:* m", "c 1:3 rwm"} { // runc's base: mknod anything, open little
		must(t, os.WriteFile(filepath.Join(dir, "devices.allow"), []byte(rule), 0))
	}
	s.proc = s.command("sleep", "600")
	must(t, s.proc.Start())
	t.Cleanup(func() {
		_ = s.proc.Process.Kill()
		_ = s.proc.Wait()
		_ = os.Remove(dir)
	})
	for i := 0; ; i++ {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", s.proc.Process.Pid)); link == s.root {
			break
		}
		if i > 200 {
			t.Fatal("sandbox process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// command runs a busybox applet inside the sandbox's cgroup and root.
func (s *sandbox) command(args ...string) *exec.Cmd {
	procs := filepath.Join(devicesRoot, s.cgroup, "cgroup.procs")
	script := fmt.Sprintf("echo $$ > %s && exec chroot %s /busybox %s", procs, s.root, strings.Join(args, " "))
	return exec.Command("sh", "-c", script)
}

// open reports what opening path inside the sandbox gives.
func (s *sandbox) open(path string) string {
	out, err := s.command("cat", path).CombinedOutput()
	switch msg := string(out); {
	case err == nil:
		return "ok"
	case strings.Contains(msg, "No such device or address"):
		return "ENXIO"
	case strings.Contains(msg, "Operation not permitted"):
		return "EPERM"
	case strings.Contains(msg, "No such file"):
		return "ENOENT"
	default:
		return msg
	}
}

func (s *sandbox) devicesList() string {
	b, err := os.ReadFile(filepath.Join(devicesRoot, s.cgroup, "devices.list"))
	must(s.t, err)
	return string(b)
}

func newManager(t testing.TB, s *sandbox, dir string) (*Manager, *ledger.Ledger) {
	t.Helper()
	store, err := ledger.NewFileStore(dir)
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	reg := registry.New()
	reg.Put(registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p",
		PID: s.proc.Process.Pid, CgroupsPath: s.cgroup})
	log := logrus.New()
	log.SetOutput(io.Discard)
	return New(staticInv{testInventory()}, allHealthy{}, l, reg, logrus.NewEntry(log)), l
}

func TestAttachDetachRealCgroup(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	target := Target{PodNamespace: "ml", PodName: "p"}

	if got := s.open("/dev/nvidia1"); got != "ENOENT" {
		t.Fatalf("before attach: %s", got)
	}
	res, err := m.Attach(target, []string{"1"}, 0)
	must(t, err)
	if len(res.GPUs) != 1 || res.GPUs[0].Index != 1 {
		t.Fatalf("attached %+v", res.GPUs)
	}
	for _, p := range []string{"/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if got := s.open(p); got != "ENXIO" {
			t.Errorf("after attach, open %s = %s, want ENXIO (allowed, no driver)", p, got)
		}
	}
	if got := s.open("/dev/nvidia2"); got != "ENOENT" {
		t.Errorf("GPU 2 visible: %s", got)
	}
	if list := s.devicesList(); strings.Contains(list, "195:*") || strings.Contains(list, "a *:*") || !strings.Contains(list, "c 195:1 rwm") {
		t.Fatalf("devices.list = %q: want a per-GPU rule and no wildcard", list)
	}
	if g, _ := l.Lookup(res.GPUs[0].UUID); g.State != ledger.Active || g.Reason != ledger.Attach {
		t.Fatalf("grant = %+v", g)
	}
	if _, err := m.Attach(Target{ContainerID: "c0ffee"}, nil, 1); err != nil {
		t.Fatalf("attach by id prefix and count: %v", err)
	}

	_, err = m.Detach(target, nil, false)
	must(t, err)
	if got := s.open("/dev/nvidia1"); got != "ENOENT" {
		t.Fatalf("after detach node still there: %s", got)
	}
	// The container makes the node itself (CVE-2021-1056): the cgroup says no.
	must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
	if got := s.open("/dev/nvidia1"); got != "EPERM" {
		t.Fatalf("self-made node after detach: %s, want EPERM", got)
	}
	if got := s.open("/dev/nvidiactl"); got != "ENOENT" {
		t.Errorf("control node left after last GPU detached: %s", got)
	}
	if len(l.Grants()) != 0 {
		t.Fatalf("ledger after detach: %v", l.Grants())
	}
}

func TestAttachRollsBackAtEveryStep(t *testing.T) {
	for _, step := range []string{"reserved", "granted"} {
		t.Run(step, func(t *testing.T) {
			s := newSandbox(t)
			m, l := newManager(t, s, t.TempDir())
			before := s.devicesList()
			m.SetFailpoint(func(at string) error {
				if at == step {
					return errors.New("injected")
				}
				return nil
			})
			if _, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0); err == nil {
				t.Fatal("attach succeeded through a failpoint")
			}
			if len(l.Grants()) != 0 {
				t.Fatalf("ledger kept %v", l.Grants())
			}
			if after := s.devicesList(); after != before {
				t.Fatalf("devices.list changed: %q -> %q", before, after)
			}
			if got := s.open("/dev/nvidia2"); got != "ENOENT" {
				t.Fatalf("node left behind: %s", got)
			}
		})
	}
}

// A crash between steps (simulated by a panic, which skips every rollback)
// leaves a Pending grant; the next start's Recover undoes it completely.
func TestRecoverAfterCrashAtEveryStep(t *testing.T) {
	for _, step := range []string{"reserved", "granted", "revoked", "removed"} {
		t.Run(step, func(t *testing.T) {
			s := newSandbox(t)
			state := t.TempDir()
			m, _ := newManager(t, s, state)
			before := s.devicesList()
			detach := step == "revoked" || step == "removed"
			if detach {
				_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, 0)
				must(t, err)
			}
			m.SetFailpoint(func(at string) error {
				if at == step {
					panic("crash")
				}
				return nil
			})
			func() {
				defer func() { _ = recover() }()
				if detach {
					_, _ = m.Detach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, false)
				} else {
					_, _ = m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, 0)
				}
			}()
			restarted, l := newManager(t, s, state)
			undone, err := restarted.Recover()
			must(t, err)
			if len(undone) != 1 {
				t.Fatalf("recover undid %v", undone)
			}
			if len(l.Grants()) != 0 {
				t.Fatalf("ledger after recover: %v", l.Grants())
			}
			if after := s.devicesList(); after != before {
				t.Fatalf("devices.list after recover %q, want %q", after, before)
			}
			if got := s.open("/dev/nvidia3"); got != "ENOENT" {
				t.Fatalf("node after recover: %s", got)
			}
		})
	}
}

func TestReconcileReappliesResetGrant(t *testing.T) {
	s := newSandbox(t)
	m, _ := newManager(t, s, t.TempDir())
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"0"}, 0)
	must(t, err)
	// What a runtime update does to a v1 cgroup: rewrite the rules.
	must(t, os.WriteFile(filepath.Join(devicesRoot, s.cgroup, "devices.deny"), []byte("c 195:0 rwm"), 0))
	must(t, os.Remove(filepath.Join(s.root, "dev", "nvidia0")))
	if got := s.open("/dev/nvidia0"); got != "ENOENT" {
		t.Fatalf("setup: %s", got)
	}
	n, err := m.Reconcile("")
	must(t, err)
	if n == 0 {
		t.Fatal("reconcile re-applied nothing")
	}
	if got := s.open("/dev/nvidia0"); got != "ENXIO" {
		t.Fatalf("after reconcile: %s", got)
	}
	// The node reconcile made is recorded as hotgpu's: detach removes it.
	_, err = m.Detach(Target{ContainerID: "c0ffee1234567890"}, nil, false)
	must(t, err)
	if got := s.open("/dev/nvidia0"); got != "ENOENT" {
		t.Fatalf("after detach: %s", got)
	}
}

func TestAttachErrors(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	must(t, l.Acquire(ledger.Holder{ContainerID: "someone-else"}, ledger.Annotation, ledger.Active, testInventory().GPUs[1].UUID))
	tests := []struct {
		name    string
		target  Target
		ids     []string
		count   int
		wantErr string
	}{
		{"unknown pod", Target{PodNamespace: "ml", PodName: "nope"}, []string{"0"}, 0, "has no container"},
		{"unknown GPU", Target{ContainerID: "c0ffee1234567890"}, []string{"7"}, 0, "GPU 7 does not exist"},
		{"held GPU", Target{ContainerID: "c0ffee1234567890"}, []string{"1"}, 0, "held by container someone-else"},
		{"too many", Target{ContainerID: "c0ffee1234567890"}, nil, 4, "4 requested, 3 free"},
		{"pid 1", Target{PID: 1}, []string{"0"}, 0, "not a container process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.devicesList()
			_, err := m.Attach(tt.target, tt.ids, tt.count)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if len(l.Grants()) != 1 || s.devicesList() != before {
				t.Fatal("a failed attach changed state")
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A failed attach undoes only what it did: access and nodes the container
// had before (here /dev/nvidiactl from its own spec) stay.
func TestFailedAttachKeepsWhatTheContainerHad(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	must(t, os.WriteFile(filepath.Join(devicesRoot, s.cgroup, "devices.allow"), []byte("c 195:255 rwm"), 0))
	must(t, s.command("mknod", "/dev/nvidiactl", "c", "195", "255").Run())
	// A plain file where /dev/nvidia-uvm must go makes the node step fail.
	must(t, os.WriteFile(filepath.Join(s.root, "dev", "nvidia-uvm"), nil, 0o644))
	before := s.devicesList()

	if _, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0); err == nil {
		t.Fatal("attach succeeded over a plain file at /dev/nvidia-uvm")
	}
	if after := s.devicesList(); after != before {
		t.Fatalf("devices.list changed: %q -> %q", before, after)
	}
	if got := s.open("/dev/nvidiactl"); got != "ENXIO" {
		t.Fatalf("the container lost the /dev/nvidiactl it had: %s", got)
	}
	if got := s.open("/dev/nvidia2"); got != "ENOENT" {
		t.Fatalf("node left behind: %s", got)
	}
	if len(l.Grants()) != 0 {
		t.Fatalf("ledger kept %v", l.Grants())
	}
}

// Naming one GPU twice (index and UUID) is refused before anything changes:
// counted twice it would look like the container's last GPU and take its
// control nodes away.
func TestDetachOneGPUNamedTwice(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"1", "2"}, 0)
	must(t, err)
	before, grants := s.devicesList(), l.Grants()
	uuid1 := testInventory().GPUs[1].UUID
	if _, err := m.Detach(Target{ContainerID: "c0ffee1234567890"}, []string{"1", uuid1}, false); err == nil || !strings.Contains(err.Error(), "named twice") {
		t.Fatalf("err = %v, want named twice", err)
	}
	if _, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"3", "3"}, 0); err == nil {
		t.Fatal("attach of one GPU twice succeeded")
	}
	if after := s.devicesList(); after != before {
		t.Fatalf("devices.list changed: %q -> %q", before, after)
	}
	if got := l.Grants(); len(got) != len(grants) || got[0] != grants[0] || got[1] != grants[1] {
		t.Fatalf("ledger changed: %v -> %v", grants, got)
	}
	if got := s.open("/dev/nvidiactl"); got != "ENXIO" {
		t.Fatalf("control node lost: %s", got)
	}
}
