package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// TestCgroupV2ForeignProgramAndUpdate: on the real runtime in unified
// cgroup mode, a second device program that is not hotgpu's (attached with
// BPF_F_ALLOW_MULTI next to it, as another tool or systemd does) does not
// break detach: hotgpu swaps in one program from the container's own rules
// and its GPUs, so a detached GPU is refused, FUSE still opens, and a new
// attach works. A `ctr task update` (runc update) afterwards keeps the GPU.
func TestCgroupV2ForeignProgramAndUpdate(t *testing.T) {
	if os.Getenv(cgroup2NSEnv) == "" {
		reexecCgroup2Only(t)
		return
	}
	env := startEnv(t)
	c, d := env.c, env.d
	id, pid := ctrTask(t, c, "--device", "/dev/fuse", "--cpu-shares", "0")
	dir := filepath.Join("/sys/fs/cgroup", c.CgroupParent, "ctr-"+id)
	opens := func(when, path, want string) {
		t.Helper()
		if path == "/dev/fuse" { // reading it without a mount fails: only open
			if res := ctrExec(t, c, id, "sh", "-c", "exec 3</dev/fuse"); res.ExitCode != 0 {
				t.Errorf("%s: open /dev/fuse: %+v", when, res)
			}
			return
		}
		if got := ctrOpen(t, c, id, path); got != want {
			t.Errorf("%s: open %s = %s, want %s", when, path, got, want)
		}
	}
	mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	opens("after attach", "/dev/nvidia3", "ENXIO")
	attachAllowAll(t, dir)
	if n := len(devicePrograms(t, dir)); n != 2 {
		t.Fatalf("setup: %d device programs on %s, want hotgpu's and the foreign one", n, dir)
	}
	opens("with a foreign allow-all program", "/dev/nvidia3", "ENXIO")
	opens("with a foreign allow-all program", "/dev/fuse", "ok")

	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	if res := ctrExec(t, c, id, "mknod", "/dev/nvidia3", "c", "195", "3"); res.ExitCode != 0 {
		t.Fatalf("mknod in ctr container: %+v", res)
	}
	opens("after detach next to a foreign program", "/dev/nvidia3", "EPERM")
	opens("after detach next to a foreign program", "/dev/fuse", "ok")
	if n := len(devicePrograms(t, dir)); n != 1 {
		t.Errorf("after detach: %d device programs, want the one hotgpu built", n)
	}

	mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	// What CRI UpdateContainerResources ends in: runc update (ctr 2.2 has
	// no task update). An empty resource set changes no limit here (this
	// cgroup2 tree has no cpu, memory or pids controller), but runc still
	// runs its cgroup manager's Set.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	update := exec.CommandContext(ctx, c.Bins.Runc, "--root", filepath.Join(c.RuncRoot, harness.CtrNamespace), "update", "-r", "-", id)
	update.Stdin = strings.NewReader("{}")
	if out, err := update.CombinedOutput(); err != nil {
		t.Fatalf("runc update: %v\n%s", err, out)
	}
	opens("after runc update", "/dev/nvidia3", "ENXIO")
	opens("after runc update", "/dev/fuse", "ok")
	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	opens("after the last detach", "/dev/nvidia3", "EPERM")
}

// attachAllowAll attaches a device program that allows everything to the
// cgroup dir, next to the programs there (BPF_F_ALLOW_MULTI).
func attachAllowAll(t *testing.T, dir string) {
	t.Helper()
	insns := []uint64{0x00000001000000b7, 0x0000000000000095} // r0 = 1; exit
	license := []byte("Apache\x00")
	load := struct {
		progType, insnCnt uint32
		insns, license    uint64
	}{unix.BPF_PROG_TYPE_CGROUP_DEVICE, uint32(len(insns)),
		uint64(uintptr(unsafe.Pointer(&insns[0]))), uint64(uintptr(unsafe.Pointer(&license[0])))}
	prog, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&load)), unsafe.Sizeof(load))
	if errno != 0 {
		t.Fatalf("BPF_PROG_LOAD: %v", errno)
	}
	defer unix.Close(int(prog))
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	attach := struct{ target, prog, attachType, flags uint32 }{uint32(fd), uint32(prog), unix.BPF_CGROUP_DEVICE, unix.BPF_F_ALLOW_MULTI}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_ATTACH, uintptr(unsafe.Pointer(&attach)), unsafe.Sizeof(attach)); errno != 0 {
		t.Fatalf("BPF_PROG_ATTACH: %v", errno)
	}
}

// devicePrograms lists the ids of the device programs attached to dir.
func devicePrograms(t *testing.T, dir string) []uint32 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ids := make([]uint32, 64)
	q := struct {
		target, attachType, queryFlags, attachFlags uint32
		ids                                         uint64
		count                                       uint32
		_                                           uint32
		_                                           [5]uint64 // up to revision: see internal/hotplug/bpf_linux.go
	}{target: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE, ids: uint64(uintptr(unsafe.Pointer(&ids[0]))), count: 64}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&q)), unsafe.Sizeof(q)); errno != 0 {
		t.Fatalf("BPF_PROG_QUERY: %v", errno)
	}
	return ids[:q.count]
}
