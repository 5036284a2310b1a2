package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/systemd"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// systemdMachineEnv marks the test binary re-run inside a systemd machine
// (see bootMachine); its value lists prebuilt binaries as pkg=path pairs,
// since the machine has no C compiler to build hotgpud.
const systemdMachineEnv = "HOTGPU_IT_SYSTEMD_MACHINE"

// TestSystemdDaemonReloadKeepsGrants: with runc's systemd cgroup driver,
// systemd owns the container's scope and re-applies its DeviceAllow= on
// every daemon-reload. A GPU attached live still opens after daemon-reload
// and a restart of another unit (hotgpu told systemd), and a detached one
// stays refused after daemon-reload (hotgpu took it out of DeviceAllow=,
// which only grows otherwise). A hotgpud kill -9 and restart and a
// containerd restart in between change none of this.
func TestSystemdDaemonReloadKeepsGrants(t *testing.T) {
	if os.Getenv(systemdMachineEnv) == "" {
		runInSystemdMachine(t)
		return
	}
	useBins(t, os.Getenv(systemdMachineEnv))
	env := startEnv(t)
	c, d := env.c, env.d
	sd := &systemctl{t: t}
	other := "hotgpu-it-other-" + strconv.Itoa(os.Getpid()) + ".service"
	sd.must("systemd-run", "--unit="+other, "--collect", "sleep", "600")
	t.Cleanup(func() { _, _ = sd.run("systemctl", "stop", other) })

	name := fmt.Sprint("sd", time.Now().UnixNano())
	unit := "hotgpu-it-" + name + ".scope"
	// No CPU weight: the machine's cgroup2 tree has no cpu controller.
	id, pid := ctrTask(t, c, "--runc-systemd-cgroup", "--cgroup", "system.slice:hotgpu-it:"+name, "--cpu-shares", "0")
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup"); err != nil || !strings.Contains(string(b), "0::/system.slice/"+unit+"\n") {
		t.Fatalf("runc did not put the container in systemd scope %s: %q, %v", unit, b, err)
	}
	if got := sd.must("systemctl", "show", "-p", "DevicePolicy", unit); !strings.Contains(got, "DevicePolicy=strict") {
		t.Fatalf("scope %s is not confined by systemd: %s", unit, got)
	}
	mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	if got := sd.must("systemctl", "show", "-p", "DeviceAllow", unit); !strings.Contains(got, "/dev/char/195:3 rwm") {
		t.Errorf("after attach, DeviceAllow of %s = %s, want /dev/char/195:3 rwm", unit, got)
	}
	opens := func(when, want string) {
		t.Helper()
		if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != want {
			t.Errorf("%s: open /dev/nvidia3 = %s, want %s", when, got, want)
		}
	}
	opens("after attach", "ENXIO")
	sd.must("systemctl", "daemon-reload")
	opens("after daemon-reload", "ENXIO")
	sd.must("systemctl", "restart", other)
	opens("after restarting another unit", "ENXIO")
	d.kill9()
	d.start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("containerd restart: %v", err)
	}
	sd.must("systemctl", "daemon-reload")
	opens("after hotgpud kill -9 and restart, containerd restart and daemon-reload", "ENXIO")

	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	if res := ctrExec(t, c, id, "mknod", "/dev/nvidia3", "c", "195", "3"); res.ExitCode != 0 {
		t.Fatalf("mknod in the container: %+v", res)
	}
	opens("after detach (self-made node)", "EPERM")
	sd.must("systemctl", "daemon-reload")
	opens("after detach and daemon-reload", "EPERM")
	if got := sd.must("systemctl", "show", "-p", "DeviceAllow", unit); strings.Contains(got, "195:3") || !strings.Contains(got, "/dev/char/1:3 rwm") {
		t.Errorf("after detach, DeviceAllow of %s = %s: want the container's own devices without the GPU", unit, got)
	}
}

// systemctl runs systemd's tools in the machine the test runs in.
type systemctl struct{ t *testing.T }

func (s *systemctl) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func (s *systemctl) must(args ...string) string {
	s.t.Helper()
	out, err := s.run(args...)
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// useBins makes buildBin return the binaries built outside the machine.
func useBins(t testing.TB, list string) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.bins == nil {
		built.bins = map[string]string{}
	}
	for _, kv := range strings.Fields(list) {
		pkg, path, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad %s entry %q", systemdMachineEnv, kv)
		}
		built.bins[pkg+" "] = path
	}
}

// runInSystemdMachine runs t again inside a machine whose init is systemd
// and fails if it does not pass there.
func runInSystemdMachine(t *testing.T) {
	out, err := inSystemdMachine(t, "-test.run=^"+t.Name()+"$", "-test.timeout=8m")
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("run in the systemd machine failed: %v\n%s", err, out)
	}
	t.Logf("run in the systemd machine:\n%s", out)
}

// inSystemdMachine boots a systemd machine and runs the test binary there
// with args, as a service of its systemd, marked with systemdMachineEnv.
func inSystemdMachine(tb testing.TB, args ...string) ([]byte, error) {
	var bins, dirs []string
	for _, pkg := range []string{"./cmd/hotgpud", "./cmd/hotgpu"} {
		bin := buildBin(tb, pkg)
		bins, dirs = append(bins, pkg+"="+bin), append(dirs, filepath.Dir(bin))
	}
	m := bootMachine(tb, dirs...)
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	argv := []string{"systemd-run", "--pipe", "--wait", "--collect", "--quiet", "--service-type=exec",
		"-p", "Delegate=yes", "--working-directory=" + wd, "--setenv=" + systemdMachineEnv + "=" + strings.Join(bins, " ")}
	for _, k := range []string{"PATH", "HOME", "GOROOT", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOPROXY", "HOTGPU_CACHE", "HOTGPU_TEST_STRICT", "CGO_CFLAGS", "HOTGPU_BENCH_STATE_DIR"} {
		if v, ok := os.LookupEnv(k); ok {
			argv = append(argv, "--setenv="+k+"="+v)
		}
	}
	argv = append(append(argv, os.Args[0], "-test.count=1", "-test.v"), args...)
	return m.command(argv...).CombinedOutput()
}

// machine is a Debian root (integration/systemd-root.sh) booted with
// systemd-nspawn: systemd is its init and owns a unified cgroup tree. nspawn
// runs it with seccomp off and every capability: with nspawn's defaults
// bpf(2) fails with EPERM and systemd silently enforces no DeviceAllow=
// (see docs/runtime-setups.md). The host's test tree, Go caches and
// $HOTGPU_CACHE are bound into it at the same paths; its own root is a
// throw-away overlay.
type machine struct {
	cmd    *exec.Cmd
	leader int
}

func bootMachine(t testing.TB, binds ...string) *machine {
	testenv.RequireRoot(t, "boots a systemd machine with systemd-nspawn")
	for _, tool := range []string{"systemd-nspawn", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "needs %s (hack/host-deps.sh installs systemd-container)", tool)
		}
	}
	root := systemdRoot(t)
	binds = append(binds, filepath.Dir(os.Args[0]))
	if wd, err := os.Getwd(); err == nil {
		binds = append(binds, filepath.Dir(wd))
	}
	for _, k := range []string{"GOROOT", "GOMODCACHE", "GOCACHE"} {
		if out, err := exec.Command("go", "env", k).Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
			binds = append(binds, string(bytes.TrimSpace(out)))
		}
	}
	binds = append(binds, filepath.Dir(root))
	args := []string{"-D", root, "--boot", "--register=no", "--keep-unit", "--console=passive",
		"--capability=all", "--volatile=overlay", "-M", "hotgpu-it-" + strconv.Itoa(os.Getpid())}
	for _, b := range slices.Compact(slices.Sorted(slices.Values(binds))) {
		args = append(args, "--bind="+b)
	}
	// nspawn makes payload/ and supervisor/ cgroups next to its own: give
	// it one of its own, or it takes the hierarchies' roots.
	cgroups := machineCgroups(t)
	script := `for d in "$@"; do case $d in --) shift; break;; esac; echo $$ > "$d/cgroup.procs" || exit 1; shift; done; exec systemd-nspawn "$@"`
	var log bytes.Buffer
	cmd := exec.Command("sh", append(append(append([]string{"-c", script, "sh"}, cgroups...), "--"), args...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "SYSTEMD_SECCOMP=0")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	m := &machine{cmd: cmd}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if m.leader > 0 {
			_ = syscall.Kill(m.leader, syscall.Signal(34+4)) // SIGRTMIN+4: systemd powers off
		}
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		for _, d := range cgroups {
			removeCgroupTree(t, d)
		}
	})
	if err := m.waitRunning(exited); err != nil {
		t.Fatalf("the systemd machine did not come up: %v\nsystemd-nspawn %s\n%s", err, strings.Join(args, " "), log.String())
	}
	return m
}

// waitRunning waits until the machine's systemd reports the system up.
func (m *machine) waitRunning(exited <-chan struct{}) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("systemd-nspawn exited")
		case <-time.After(250 * time.Millisecond):
		}
		if m.leader == 0 {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.cmd.Process.Pid, m.cmd.Process.Pid))
			if f := strings.Fields(string(b)); len(f) > 0 {
				m.leader, _ = strconv.Atoi(f[0])
			}
			continue
		}
		out, _ := m.command("systemctl", "is-system-running").Output()
		if last = strings.TrimSpace(string(out)); last == "running" || last == "degraded" {
			return nil
		}
	}
	return fmt.Errorf("still %q after 2 minutes", last)
}

// command runs argv in every namespace of the machine's init.
func (m *machine) command(argv ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(m.leader), "-a"}, argv...)...)
}

// systemdRoot returns the cached machine root, made on first use.
func systemdRoot(t testing.TB) string {
	out, err := exec.Command("bash", "systemd-root.sh").Output()
	if err != nil {
		t.Fatalf("integration/systemd-root.sh: %v", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		testenv.Skip(t, "needs the systemd machine root: integration/systemd-root.sh made none (needs root and debootstrap)")
	}
	return root
}

// machineCgroups makes the machine's own cgroup in the cgroup2 and the
// name=systemd hierarchies, the two nspawn uses.
func machineCgroups(t testing.TB) []string {
	var dirs []string
	for _, h := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue
		}
		d := filepath.Join(h, "hotgpu-it-machine-"+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("failed to make the machine's cgroup: %v", err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// removeCgroupTree removes the empty cgroup dir and everything below it,
// deepest first.
func removeCgroupTree(t testing.TB, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil {
			t.Errorf("failed to remove the machine's cgroup: %v", err)
		}
	}
}

// TestSystemdDBusDeviceAllow: hotgpu's D-Bus calls against a real systemd:
// the list SetDevices writes on a transient scope is what `systemctl show`
// and Allowed read back, also after daemon-reload, and writing it again
// without a device takes that device out (DeviceAllow= only grows when set
// piecewise).
func TestSystemdDBusDeviceAllow(t *testing.T) {
	if os.Getenv(systemdMachineEnv) == "" {
		runInSystemdMachine(t)
		return
	}
	sd := &systemctl{t: t}
	unit := "hotgpu-it-dbus-" + strconv.Itoa(os.Getpid()) + ".scope"
	scope := exec.Command("systemd-run", "--scope", "--unit="+unit, "-p", "DevicePolicy=strict", "sleep", "600")
	if err := scope.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = scope.Process.Kill(); _ = scope.Wait() })
	for i := 0; ; i++ {
		if out, _ := sd.run("systemctl", "is-active", unit); strings.TrimSpace(out) == "active" {
			break
		}
		if i == 100 {
			t.Fatalf("scope %s did not start", unit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := systemd.New()
	defer m.Close()
	null := &devices.Rule{Type: devices.CharDevice, Major: 1, Minor: 3, Permissions: "rwm", Allow: true}
	gpu := &devices.Rule{Type: devices.CharDevice, Major: 195, Minor: 3, Permissions: "rwm", Allow: true}
	check := func(when string, wantGPU bool) {
		t.Helper()
		allowed, err := m.Allowed(unit)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		has, err := m.Allows(unit, 195, 3)
		shown := sd.must("systemctl", "show", "-p", "DeviceAllow", unit)
		if err != nil || has != wantGPU || (allowed["/dev/char/195:3"] != "") != wantGPU ||
			strings.Contains(shown, "/dev/char/195:3 rwm") != wantGPU || allowed["/dev/char/1:3"] != "rwm" {
			t.Errorf("%s: Allowed = %v, Allows(195:3) = %v, %v; systemctl: %s; want the GPU: %v", when, allowed, has, err, shown, wantGPU)
		}
	}
	if err := m.SetDevices(unit, []*devices.Rule{null, gpu}); err != nil {
		t.Fatal(err)
	}
	check("after setting the GPU", true)
	sd.must("systemctl", "daemon-reload")
	check("after daemon-reload", true)
	if err := m.SetDevices(unit, []*devices.Rule{null}); err != nil {
		t.Fatal(err)
	}
	check("after setting the list without it", false)
	sd.must("systemctl", "daemon-reload")
	check("after another daemon-reload", false)
	if err := m.SetDevices("hotgpu-it-no-such-unit.scope", []*devices.Rule{null}); err == nil {
		t.Error("SetDevices on a unit that does not exist succeeded")
	}
}
