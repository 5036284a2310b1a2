package attach

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// v2OnlyEnv marks the re-executed test binary that runs where the cgroup v1
// devices hierarchy is unmounted: on this hybrid host that is the only way to
// make hotgpu take the cgroup v2 (eBPF) path for a whole attach and detach.
const v2OnlyEnv = "HOTGPU_TEST_V2_ONLY"

// TestAttachDetachCgroupV2 runs attach, detach and reconcile through the
// Manager on a cgroup v2 container stand-in: a chrooted busybox in its own
// cgroup2 directory with runc's default device program attached. It re-runs
// itself in a private mount namespace without the v1 devices hierarchy.
func TestAttachDetachCgroupV2(t *testing.T) {
	if os.Getenv(v2OnlyEnv) == "" {
		reexecV2Only(t)
		return
	}
	s := newV2Sandbox(t)
	m, l := newManagerFor(t, s.pid(), s.cgroup, t.TempDir())
	tgt, err := hotplug.TargetFromPID(s.pid())
	must(t, err)
	if tgt.DevicesDir != "" || tgt.UnifiedDir != s.dir {
		t.Fatalf("target %+v: want the cgroup2 dir %s only", tgt, s.dir)
	}
	progs := s.programs()
	if len(progs) != 1 {
		t.Fatalf("runc-like setup attached %v, want one program", progs)
	}

	res, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"1"}, 0)
	must(t, err)
	progs = s.expectReplaced(progs)
	for p, want := range map[string]string{"/dev/nvidia1": "ENXIO", "/dev/nvidiactl": "ENXIO", "/dev/nvidia-uvm": "ENXIO", "/dev/null": "ok"} {
		if got := s.open(p); got != want {
			t.Errorf("after attach, open %s = %s, want %s", p, got, want)
		}
	}
	must(t, s.command("mknod", "/dev/nvidia2", "c", "195", "2").Run())
	if got := s.open("/dev/nvidia2"); got != "EPERM" {
		t.Errorf("self-made node of a GPU never attached: %s, want EPERM", got)
	}

	// Nothing changed: a reconcile pass must not swap the program.
	if n, err := m.Reconcile(""); err != nil || n != 0 {
		t.Fatalf("reconcile of an intact grant re-applied %d: %v", n, err)
	}
	if now := s.programs(); !slices.Equal(now, progs) {
		t.Fatalf("reconcile of an intact grant swapped the program: %v -> %v", progs, now)
	}

	// A runtime update puts runc's own program back; reconcile re-applies.
	must(t, cgroups.DevicesSetV2(s.dir, &cgroups.Resources{Devices: hotplug.DefaultRules()}))
	if got := s.open("/dev/nvidia1"); got != "EPERM" {
		t.Fatalf("after the runtime's reset, open = %s, want EPERM", got)
	}
	progs = s.programs()
	if n, err := m.Reconcile(""); err != nil || n == 0 {
		t.Fatalf("reconcile re-applied %d grants: %v", n, err)
	}
	progs = s.expectReplaced(progs)
	if got := s.open("/dev/nvidia1"); got != "ENXIO" {
		t.Errorf("after reconcile, open = %s, want ENXIO", got)
	}

	_, err = m.Detach(Target{ContainerID: "c0ffee1234567890"}, []string{res.GPUs[0].UUID}, false)
	must(t, err)
	s.expectReplaced(progs)
	if got := s.open("/dev/nvidia1"); got != "ENOENT" {
		t.Errorf("after detach, open = %s, want ENOENT (node removed)", got)
	}
	if got := s.open("/dev/nvidiactl"); got != "ENOENT" {
		t.Errorf("control node left after the last GPU: %s", got)
	}
	must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
	if got := s.open("/dev/nvidia1"); got != "EPERM" {
		t.Errorf("self-made node after detach: %s, want EPERM", got)
	}
	if got := s.open("/dev/null"); got != "ok" {
		t.Errorf("base rules lost: open /dev/null = %s", got)
	}
	if len(l.Grants()) != 0 {
		t.Errorf("ledger after detach: %v", l.Grants())
	}
}

// reexecV2Only runs the test t again in a private mount namespace where every
// cgroup v1 devices hierarchy is unmounted, and fails if it does not pass.
func reexecV2Only(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: creates cgroups, mount namespaces and chroots")
	}
	v1, unified := cgroupMountPoints(t)
	if unified == "" {
		testenv.Skip(t, "needs a cgroup2 hierarchy (e.g. /sys/fs/cgroup/unified)")
	}
	testenv.LookPath(t, "unshare", "util-linux")
	testenv.LookPath(t, "busybox", "apt-get install busybox-static")
	script := `for m in $MOUNTS; do umount -l "$m" || exit 1; done; exec "$@"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), v2OnlyEnv+"=1", "MOUNTS="+strings.Join(v1, " "))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("v2-only run failed: %v\n%s", err, out)
	}
	t.Logf("v2-only run, without %v:\n%s", v1, out)
}

// cgroupMountPoints returns the mount points of the v1 devices hierarchy and
// of the cgroup2 hierarchy.
func cgroupMountPoints(t *testing.T) (v1Devices []string, unified string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	must(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(pf) < 3 {
			continue
		}
		switch {
		case pf[0] == "cgroup2":
			unified = fields[4]
		case pf[0] == "cgroup" && strings.Contains(","+pf[2]+",", ",devices,"):
			v1Devices = append(v1Devices, fields[4])
		}
	}
	return v1Devices, unified
}

// v2Sandbox is a chrooted busybox in its own cgroup2 directory with runc's
// default device program attached.
type v2Sandbox struct {
	t      *testing.T
	root   string
	dir    string // host path of the cgroup2 directory
	cgroup string // relative to the cgroup2 root
	proc   *exec.Cmd
	// runc are the rules of the program runc attached: the spec's own
	// (deny all, then own), then runc's defaults.
	runc []*devices.Rule
	// ctrPid is the container process when it runs under a stand-in
	// shim (proc) that works in its bundle, 0 otherwise.
	ctrPid int
}

func newV2Sandbox(t *testing.T) *v2Sandbox { return newV2SandboxSpec(t, nil, false) }

// newV2SandboxSpec is newV2Sandbox for a container whose spec allows the
// devices own besides runc's defaults. With bundle, its process runs under a
// stand-in shim that works in the container's OCI bundle, as containerd's
// does; without, the runtime's bundle cannot be found.
func newV2SandboxSpec(t *testing.T, own []specs.LinuxDeviceCgroup, bundle bool) *v2Sandbox {
	t.Helper()
	_, unified := cgroupMountPoints(t)
	busybox, err := exec.LookPath("busybox")
	must(t, err)
	s := &v2Sandbox{t: t, root: filepath.Join(t.TempDir(), "root"), cgroup: fmt.Sprintf("/hotgpu-attach-v2-%d", time.Now().UnixNano())}
	s.dir = filepath.Join(unified, s.cgroup)
	must(t, os.MkdirAll(filepath.Join(s.root, "dev"), 0o755))
	data, err := os.ReadFile(busybox)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(s.root, "busybox"), data, 0o755))
	must(t, unix.Mknod(filepath.Join(s.root, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(s.root, "dev", "fuse"), unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))))
	must(t, os.Mkdir(s.dir, 0o755))
	t.Cleanup(func() {
		// A killed process leaves its cgroup a moment after it is reaped.
		for range 100 {
			if err := os.Remove(s.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("failed to remove test cgroup %s", s.dir)
	})
	specRules := append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, own...)
	rules, err := hotplug.RulesFromSpec(specRules)
	must(t, err)
	s.runc = append(rules, hotplug.DefaultRules()...)
	if err := cgroups.DevicesSetV2(s.dir, &cgroups.Resources{Devices: s.runc}); err != nil {
		testenv.Skipf(t, "cannot attach a BPF_CGROUP_DEVICE program here: %v", err)
	}
	if bundle {
		s.startShim(specRules)
	} else {
		s.proc = s.command("sleep", "600")
		must(t, s.proc.Start())
	}
	t.Cleanup(func() {
		if s.ctrPid != 0 {
			_ = unix.Kill(s.ctrPid, unix.SIGKILL)
		}
		_ = s.proc.Process.Kill()
		_ = s.proc.Wait()
	})
	for i := 0; ; i++ {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", s.pid())); link == s.root {
			break
		}
		if i > 200 {
			t.Fatal("sandbox process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// startShim writes the container's bundle and starts it from a stand-in
// shim working there: the container process is the shim's child.
func (s *v2Sandbox) startShim(rules []specs.LinuxDeviceCgroup) {
	bundle := filepath.Join(s.t.TempDir(), "bundle")
	must(s.t, os.Mkdir(bundle, 0o755))
	spec := specs.Spec{Version: specs.Version, Linux: &specs.Linux{CgroupsPath: s.cgroup, Resources: &specs.LinuxResources{Devices: rules}}}
	b, err := json.Marshal(spec)
	must(s.t, err)
	must(s.t, os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644))
	inner := s.command("sleep", "600").Args[2]
	s.proc = exec.Command("sh", "-c", `sh -c "$1" & echo $!; wait`, "sh", inner)
	s.proc.Dir = bundle
	out, err := s.proc.StdoutPipe()
	must(s.t, err)
	must(s.t, s.proc.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	must(s.t, err)
	s.ctrPid, err = strconv.Atoi(strings.TrimSpace(line))
	must(s.t, err)
}

func (s *v2Sandbox) pid() int {
	if s.ctrPid != 0 {
		return s.ctrPid
	}
	return s.proc.Process.Pid
}

// openOnly reports what opening path inside the sandbox gives, without
// reading it (reading /dev/fuse fails when nothing is mounted).
func (s *v2Sandbox) openOnly(path string) string {
	return openResult(s.command("sh", "-c", "'exec 3<"+path+"'").CombinedOutput())
}

// command runs a busybox applet inside the sandbox's cgroup and root.
func (s *v2Sandbox) command(args ...string) *exec.Cmd {
	script := fmt.Sprintf("echo $$ > %s/cgroup.procs && exec chroot %s /busybox %s", s.dir, s.root, strings.Join(args, " "))
	return exec.Command("sh", "-c", script)
}

func (s *v2Sandbox) open(path string) string {
	return openResult(s.command("cat", path).CombinedOutput())
}

func openResult(out []byte, err error) string {
	switch msg := strings.ToLower(string(out)); { // busybox sh and cat differ in case
	case err == nil:
		return "ok"
	case strings.Contains(msg, "no such device or address"):
		return "ENXIO"
	case strings.Contains(msg, "operation not permitted"):
		return "EPERM"
	case strings.Contains(msg, "no such file"):
		return "ENOENT"
	default:
		return string(out)
	}
}

// programs lists the device programs attached to the sandbox's cgroup.
func (s *v2Sandbox) programs() []uint32 {
	s.t.Helper()
	fd, err := unix.Open(s.dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(s.t, err)
	defer unix.Close(fd)
	ids := make([]uint32, 64)
	var pin runtime.Pinner
	pin.Pin(&ids[0])
	defer pin.Unpin()
	attr := struct { // union bpf_attr, BPF_PROG_QUERY part
		targetFd, attachType, queryFlags, attachFlags uint32
		progIDs                                       uint64
		progCnt, _                                    uint32
	}{targetFd: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE, progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr)); errno != 0 {
		s.t.Fatalf("BPF_PROG_QUERY on %s: %v", s.dir, errno)
	}
	return ids[:attr.progCnt]
}

// expectReplaced checks that exactly one program is attached and that it is
// a new one (hotgpu replaces the program whole, never adds one).
func (s *v2Sandbox) expectReplaced(before []uint32) []uint32 {
	s.t.Helper()
	after := s.programs()
	if len(after) != 1 || (len(before) == 1 && after[0] == before[0]) {
		s.t.Errorf("device programs before %v, after %v: want one new program replacing the old", before, after)
	}
	return after
}

// newManagerFor is newManager for a container stand-in at pid in cgroup.
func newManagerFor(t *testing.T, pid int, cgroup, dir string) (*Manager, *ledger.Ledger) {
	t.Helper()
	store, err := ledger.NewFileStore(dir)
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	reg := registry.New()
	reg.Put(registry.Container{ID: "c0ffee1234567890", Name: "app", PodNamespace: "ml", PodName: "p", PID: pid, CgroupsPath: cgroup})
	log := logrus.New()
	log.SetOutput(io.Discard)
	return New(staticInv{testInventory()}, allHealthy{}, l, reg, logrus.NewEntry(log)), l
}
