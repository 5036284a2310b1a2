package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// These tests run runc directly, the way Docker and podman do, with
// hotgpu-hook configured as the bundle's prestart and poststop hook, and
// look at the container from inside: the GPU node exists and opens with
// ENXIO (the cgroup lets it through and no driver answers), while a node
// the container makes itself for another GPU is refused with EPERM.

// runcEnv is one runc state root and cgroup parent for a test.
type runcEnv struct {
	t      *testing.T
	runc   string
	root   string
	cgroup string // cgroupfs parent, e.g. /hotgpu-it-hook-123
	hook   string
	proc   string // fake /proc/driver/nvidia
	devs   string // fake /proc/devices
}

func newRuncEnv(t *testing.T) *runcEnv {
	t.Helper()
	bins := harness.Deps(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testenv.Skip(t, "needs a static /bin/busybox (apt-get install busybox-static)")
	}
	e := &runcEnv{t: t, runc: bins.Runc, root: t.TempDir(), cgroup: fmt.Sprintf("/hotgpu-it-hook-%d", time.Now().UnixNano()), hook: buildBin(t, "./cmd/hotgpu-hook")}
	e.proc, e.devs = fakeDriverProc(t)
	t.Cleanup(func() {
		for _, sub := range []string{"devices", "unified", "memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "systemd"} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", sub, e.cgroup))
		}
	})
	return e
}

// fakeDriverProc is what the NVIDIA driver publishes for two GPUs, minors 0
// and 1, and /proc/devices with nvidia-uvm at major 511.
func fakeDriverProc(t *testing.T) (proc, devices string) {
	dir := t.TempDir()
	for i, bus := range []string{"0000:07:00.0", "0000:0f:00.0"} {
		d := filepath.Join(dir, "nvidia", "gpus", bus)
		must(t, os.MkdirAll(d, 0o755))
		info := fmt.Sprintf("Model: \t\t NVIDIA A100-SXM4-40GB\nGPU UUID: \t GPU-%08d-1111-2222-3333-444444444444\nBus Location: \t %s\nDevice Minor: \t %d\n", i, bus, i)
		must(t, os.WriteFile(filepath.Join(d, "information"), []byte(info), 0o444))
	}
	devices = filepath.Join(dir, "devices")
	must(t, os.WriteFile(devices, []byte("Character devices:\n  1 mem\n195 nvidia\n511 nvidia-uvm\n\nBlock devices:\n  8 sd\n"), 0o444))
	return filepath.Join(dir, "nvidia"), devices
}

// bundle makes a bundle whose rootfs is busybox and whose prestart and
// poststop hooks run hotgpu-hook with hookArgs, under an environment a
// hostile image could have chosen.
func (e *runcEnv) bundle(id string, script string, env []string, annotations map[string]string, hookArgs ...string) string {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc"} {
		must(t, os.MkdirAll(filepath.Join(rootfs, d), 0o755))
	}
	busybox, err := os.ReadFile("/bin/busybox")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), busybox, 0o755))
	for _, applet := range []string{"sh", "cat", "ls", "mknod", "stat", "sleep"} {
		must(t, os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)))
	}
	cmd := exec.Command(e.runc, "spec", "--bundle", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	var spec oci.Spec
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &spec))
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sh", "-c", script}
	spec.Process.Env = append([]string{"PATH=/bin"}, env...)
	// mknod needs CAP_MKNOD; the devices cgroup is what must refuse it.
	for _, set := range []*[]string{&spec.Process.Capabilities.Bounding, &spec.Process.Capabilities.Effective, &spec.Process.Capabilities.Permitted} {
		*set = append(*set, "CAP_MKNOD")
	}
	spec.Root.Readonly = false
	spec.Annotations = annotations
	spec.Linux.CgroupsPath = e.cgroup + "/" + id
	hook := oci.Hook{Path: e.hook, Args: append([]string{"hotgpu-hook", "prestart",
		"--driver-proc", e.proc, "--proc-devices", e.devs}, hookArgs...),
		// What a careless runtime setup could pass on: must not matter.
		Env: []string{"LD_PRELOAD=/nonexistent/evil.so", "GODEBUG=panicnil=1", "HOTGPU_JUNK=1"}}
	spec.Hooks = &oci.Hooks{Prestart: []oci.Hook{hook}, Poststop: []oci.Hook{hook}}
	data, err = json.MarshalIndent(&spec, "", "  ")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644))
	return dir
}

func (e *runcEnv) cmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, e.runc, append([]string{"--root", e.root}, args...)...)
}

// run runs the bundle in the foreground and returns its output and exit code.
func (e *runcEnv) run(id, bundle string) (stdout, stderr string, code int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.cmd(ctx, "run", "--bundle", bundle, id)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	e.t.Cleanup(func() { _ = e.cmd(context.Background(), "delete", "--force", id).Run() })
	if err != nil && cmd.ProcessState == nil {
		e.t.Fatalf("failed to run runc: %v", err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

const probeScript = `ls -l /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm; cat /dev/nvidia0; mknod /dev/nvidia1 c 195 1 && cat /dev/nvidia1; true`

func checkProbe(t *testing.T, stdout, stderr string) {
	t.Helper()
	for _, want := range []string{"195,   0 ", "195, 255 ", "511,   0 "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("ls -l in the container: want a node %q, got\n%s", want, stdout)
		}
	}
	for _, want := range []string{"/dev/nvidia0': No such device or address", "/dev/nvidia1': Operation not permitted"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("container stderr: want %q, got\n%s", want, stderr)
		}
	}
}

func TestHookRuncStandalone(t *testing.T) {
	e := newRuncEnv(t)
	id := fmt.Sprint("hook-env-", time.Now().UnixNano())
	b := e.bundle(id, probeScript, []string{"NVIDIA_VISIBLE_DEVICES=0"}, nil,
		"--standalone", "--api-socket", filepath.Join(t.TempDir(), "no-hotgpud.sock"))
	stdout, stderr, code := e.run(id, b)
	if code != 0 {
		t.Fatalf("runc run exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	checkProbe(t, stdout, stderr)
}

// TestHookRuncFailsClosed: without --standalone, a hook that cannot reach
// hotgpud (no socket, or a stale one nobody listens on) refuses: runc does
// not create the container and no GPU rule is left in any cgroup.
func TestHookRuncFailsClosed(t *testing.T) {
	e := newRuncEnv(t)
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	must(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	must(t, ln.Close())
	for name, socket := range map[string]string{"missing": filepath.Join(t.TempDir(), "no-hotgpud.sock"), "stale": stale} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			id := fmt.Sprint("hook-closed-", name, "-", time.Now().UnixNano())
			b := e.bundle(id, probeScript, []string{"NVIDIA_VISIBLE_DEVICES=0"}, nil, "--api-socket", socket)
			stdout, stderr, code := e.run(id, b)
			if code == 0 || !strings.Contains(stderr, "hotgpud does not answer at "+socket) || !strings.Contains(stderr, "--standalone") {
				t.Fatalf("runc run exited %d, stderr %q: want a refusal naming hotgpud, %s and --standalone", code, stderr, socket)
			}
			if strings.Contains(stdout, "195,") {
				t.Errorf("the container ran with a GPU node:\n%s", stdout)
			}
			if out, err := e.cmd(context.Background(), "state", id).CombinedOutput(); err == nil {
				t.Errorf("runc state %s: the container exists: %s", id, out)
			}
			list, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", e.cgroup, id, "devices.list"))
			if err == nil && strings.Contains(string(list), "c 195:") {
				t.Errorf("a GPU rule was granted:\n%s", list)
			}
		})
	}
}

func TestHookRuncRefusals(t *testing.T) {
	e := newRuncEnv(t)
	tests := []struct {
		name        string
		env         []string
		annotations map[string]string
		args        []string
		wantErr     string // "" = the container runs
		wantNode    bool   // with /dev/nvidia0
	}{
		{name: "all allowed", annotations: map[string]string{"gpus.hotgpu.dev/devices": "all"}, args: []string{"--allow-all"}, wantNode: true},
		{name: "image default all", env: []string{"NVIDIA_VISIBLE_DEVICES=all"}},
		{name: "no request"},
		{name: "annotation all refused", annotations: map[string]string{"gpus.hotgpu.dev/devices": "all"}, wantErr: `GPUs is not allowed by this hook`},
		{name: "path as id", env: []string{"NVIDIA_VISIBLE_DEVICES=/dev/sda"}, wantErr: "is not a GPU index or UUID"},
		{name: "unknown gpu", annotations: map[string]string{"gpus.hotgpu.dev/devices": "7"}, wantErr: "GPU 7 does not exist"},
		{name: "kubernetes pod ignored", env: []string{"NVIDIA_VISIBLE_DEVICES=0"},
			annotations: map[string]string{"io.kubernetes.cri.sandbox-namespace": "default"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			id := fmt.Sprint("hook-refuse-", i, "-", time.Now().UnixNano())
			b := e.bundle(id, "ls /dev/nvidia0", tt.env, tt.annotations, append([]string{"--standalone", "--api-socket", ""}, tt.args...)...)
			stdout, stderr, code := e.run(id, b)
			if tt.wantErr != "" {
				if code == 0 || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("runc run exited %d, stderr %q: want a failure naming %q", code, stderr, tt.wantErr)
				}
				return
			}
			if tt.wantNode {
				if code != 0 {
					t.Fatalf("want /dev/nvidia0 in the container; exit %d stdout %q stderr %q", code, stdout, stderr)
				}
				return
			}
			if code == 0 || !strings.Contains(stderr, "No such file") {
				t.Fatalf("want the container to run without /dev/nvidia0; exit %d stdout %q stderr %q", code, stdout, stderr)
			}
		})
	}
}

// TestHookRuncWithHotgpud records the hook's grant in hotgpud's ledger:
// another container asking for the same GPU is refused, and poststop
// (runc delete) releases it.
func TestHookRuncWithHotgpud(t *testing.T) {
	e := newRuncEnv(t)
	d := startHotgpudNoNRI(t)
	ann := map[string]string{"gpus.hotgpu.dev/devices": "1"}
	id := fmt.Sprint("hook-api-", time.Now().UnixNano())
	b := e.bundle(id, `ls -l /dev/nvidia1 && cat /dev/nvidia1; mknod /dev/nvidia0 c 195 0 && cat /dev/nvidia0; true`, nil, ann, "--api-socket", d.socket)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logDir := t.TempDir()
	out, err := os.Create(filepath.Join(logDir, "stdout"))
	must(t, err)
	errOut, err := os.Create(filepath.Join(logDir, "stderr"))
	must(t, err)
	create := e.cmd(ctx, "create", "--bundle", b, id)
	create.Stdout, create.Stderr = out, errOut
	t.Cleanup(func() { _ = e.cmd(context.Background(), "delete", "--force", id).Run() })
	if err := create.Run(); err != nil {
		t.Fatalf("runc create: %v: %s", err, readFile(t, errOut.Name()))
	}
	if got := d.holders(t); got[1] != "hook:"+id {
		t.Fatalf("ledger after create: %v, want GPU 1 held by hook:%s", got, id)
	}
	list := readFile(t, filepath.Join("/sys/fs/cgroup/devices", e.cgroup, id, "devices.list"))
	if !strings.Contains(list, "c 195:1 rwm") || strings.Contains(list, "c 195:*") || strings.Contains(list, "c 195:0 ") {
		t.Errorf("devices.list should allow c 195:1 only among GPUs:\n%s", list)
	}

	// The same GPU for another container: hotgpud refuses, runc fails.
	id2 := id + "-b"
	b2 := e.bundle(id2, "true", nil, ann, "--api-socket", d.socket)
	if _, stderr, code := e.run(id2, b2); code == 0 || !strings.Contains(stderr, "held by") {
		t.Errorf("second container asking for GPU 1: exit %d, stderr %q; want a refusal naming the holder", code, stderr)
	}

	must(t, e.cmd(ctx, "start", id).Run())
	waitStopped(t, e, id)
	if stdout, stderr := readFile(t, out.Name()), readFile(t, errOut.Name()); !strings.Contains(stdout, "195,   1 ") ||
		!strings.Contains(stderr, "/dev/nvidia1': No such device or address") || !strings.Contains(stderr, "/dev/nvidia0': Operation not permitted") {
		t.Errorf("container output: stdout %q stderr %q", stdout, stderr)
	}
	if err := e.cmd(ctx, "delete", id).Run(); err != nil {
		t.Fatalf("runc delete: %v", err)
	}
	if got := d.holders(t); len(got) != 0 {
		t.Errorf("ledger after delete (poststop): %v, want empty", got)
	}
}

func waitStopped(t *testing.T, e *runcEnv, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := e.cmd(context.Background(), "state", id).Output()
		var st oci.State
		if err == nil && json.Unmarshal(out, &st) == nil && st.Status == oci.StateStopped {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("container %s did not stop", id)
}

// startHotgpudNoNRI starts hotgpud on simulated GPUs without NRI: only its
// API and CDI spec matter here. Its CDI spec goes to a private dir unless
// the test passes --cdi-dir (never the host's /var/run/cdi).
func startHotgpudNoNRI(t *testing.T, extra ...string) *hotgpud {
	t.Helper()
	dir := t.TempDir()
	h := &hotgpud{t: t, dir: dir, socket: filepath.Join(dir, "api.sock"), noNRI: true}
	h.args = append([]string{"--simulate", "dgxa100", "--no-nri", "--state-dir", filepath.Join(dir, "state"),
		"--cdi-dir", filepath.Join(dir, "cdi"), "--api-socket", h.socket, "--log-level", "debug", "--no-device-plugin"}, extra...)
	h.api = api.NewClient(h.socket)
	h.start()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("hotgpud log:\n%s", tail(readFile(t, filepath.Join(dir, "hotgpud.log")), 40))
		}
	})
	return h
}
