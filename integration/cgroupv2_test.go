package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// cgroup2NSEnv marks the re-executed test binary that runs in a private
// mount namespace whose /sys/fs/cgroup is the cgroup2 hierarchy alone: there
// runc 1.5 runs in unified mode and confines devices with an eBPF program.
const cgroup2NSEnv = "HOTGPU_IT_CGROUP2_ONLY"

// TestCgroupV2CtrAttachByPID: on the real runtime in unified cgroup mode, a
// ctr container run with --device /dev/fuse keeps FUSE through a live
// attach and detach by pid: hotgpu rebuilds runc's program from the
// container's own rules (its OCI bundle), not from runc's defaults alone.
func TestCgroupV2CtrAttachByPID(t *testing.T) {
	if os.Getenv(cgroup2NSEnv) == "" {
		reexecCgroup2Only(t)
		return
	}
	env := startEnv(t)
	c, d := env.c, env.d
	// No CPU weight: this host's cgroup2 hierarchy has no cpu controller
	// (cgroup v1 holds it), and runc would fail to write cpu.weight.
	id, pid := ctrTask(t, c, "--device", "/dev/fuse", "--cpu-shares", "0")
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup"); err != nil || !strings.Contains(string(b), "\n0::"+c.CgroupParent+"/ctr-"+id+"\n") {
		t.Fatalf("runc did not put the container in its own cgroup2 directory: %q, %v", b, err)
	}
	fuse := func(when string) {
		t.Helper()
		if res := ctrExec(t, c, id, "sh", "-c", "exec 3</dev/fuse"); res.ExitCode != 0 {
			t.Errorf("%s: open /dev/fuse: %+v", when, res)
		}
	}
	fuse("before attach")
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "ENOENT" {
		t.Fatalf("before attach: open /dev/nvidia3 = %s", got)
	}
	mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "ENXIO" {
		t.Errorf("after attach, open /dev/nvidia3 = %s, want ENXIO", got)
	}
	fuse("after attach")
	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	if res := ctrExec(t, c, id, "mknod", "/dev/nvidia3", "c", "195", "3"); res.ExitCode != 0 {
		t.Fatalf("mknod in ctr container: %+v", res)
	}
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "EPERM" {
		t.Errorf("self-made node after detach: %s, want EPERM", got)
	}
	fuse("after detach")
}

// reexecCgroup2Only runs t again in a private mount namespace where the
// cgroup v1 hierarchies are unmounted and /sys/fs/cgroup is cgroup2, and
// fails if it does not pass there.
func reexecCgroup2Only(t *testing.T) {
	testenv.RequireRoot(t, "mounts cgroup2 in a private mount namespace")
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err != nil {
		testenv.Skipf(t, "needs a cgroup2 hierarchy at /sys/fs/cgroup/unified: %v", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		testenv.Skip(t, "needs unshare (util-linux)")
	}
	script := `umount -R -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), cgroup2NSEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("cgroup2-only run failed: %v\n%s", err, out)
	}
	t.Logf("cgroup2-only run:\n%s", out)
}
