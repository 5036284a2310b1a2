package hotplug

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// BenchmarkAttachDetachV1 is one live attach and detach of a GPU on cgroup
// v1: Grant + CreateNode + Revoke + RemoveMade.
func BenchmarkAttachDetachV1(b *testing.B) {
	requireRoot(b)
	self := ownTarget(b)
	if self.DevicesDir == "" {
		b.Skip("no cgroup v1 devices hierarchy on this host")
	}
	dir := newCgroup(b, self.DevicesDir)
	writeCgroup(b, dir, "devices.deny", "a")
	writeCgroup(b, dir, "devices.allow", "c 1:3 rwm")
	benchAttachDetach(b, NewV1(dir))
}

// BenchmarkAttachDetachV2 is the same on cgroup v2, where Grant and Revoke
// each load and swap in a whole program.
func BenchmarkAttachDetachV2(b *testing.B) {
	requireRoot(b)
	self := ownTarget(b)
	if self.UnifiedDir == "" {
		b.Skip("no cgroup2 hierarchy on this host")
	}
	dir := newCgroup(b, self.UnifiedDir)
	if err := cgroups.DevicesSetV2(dir, &cgroups.Resources{Devices: DefaultRules()}); err != nil {
		testenv.Skipf(b, "cannot attach a device program: %v", err)
	}
	acc, err := NewV2(dir, DefaultRules(), nil)
	if err != nil {
		b.Fatal(err)
	}
	benchAttachDetach(b, acc)
}

func benchAttachDetach(b *testing.B, acc DeviceAccess) {
	root := b.TempDir()
	// A container's /dev is a tmpfs; mknod on the ext4 of TempDir alone
	// costs ~0.6 ms here and would hide everything else. The tmpfs is the
	// stand-in container's root, not a mount on its /dev: a filesystem the
	// host has mounted on /dev is the host's, where no node is made.
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755"); err != nil {
		b.Fatalf("failed to mount a tmpfs root: %v", err)
	}
	b.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
		b.Fatal(err)
	}
	nodes := []gpu.DeviceNode{{Path: "/dev/nvidia3", Major: gpu.NvidiaMajor, Minor: 3}}
	for b.Loop() {
		if err := acc.Grant(nodes); err != nil {
			b.Fatal(err)
		}
		made, err := CreateNode(root, nodes[0], 0o666)
		if err != nil || made == nil {
			b.Fatalf("CreateNode = %v, %v", made, err)
		}
		if err := acc.Revoke(nodes); err != nil {
			b.Fatal(err)
		}
		if err := RemoveMade(root, *made); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHolders is one node-wide busy check for eight GPUs: every
// process's fds and mappings, as a detach does after it revokes. "node" is
// this machine as it is; "mapping-300-files" adds a process that maps 300
// files of its own, as a build tool's cache or a database's segments do
// (the go command running the benchmark maps some too).
func BenchmarkHolders(b *testing.B) {
	requireRoot(b)
	nodes := make([]gpu.DeviceNode, 8)
	for i := range nodes {
		nodes[i] = gpu.DeviceNode{Path: "/dev/nvidia" + strconv.Itoa(i), Major: 195, Minor: int64(i)}
	}
	run := func(b *testing.B) {
		procs, _ := os.ReadDir("/proc")
		b.ReportMetric(float64(len(procs)), "proc-entries")
		for b.Loop() {
			if _, _, err := Holders(nodes); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("node", run)
	b.Run("mapping-300-files", func(b *testing.B) {
		c := startChild(b)
		if r := c.do(b, "mapdir "+mappedFiles(b, 300)); r != "ok" {
			b.Fatalf("mapdir: %s", r)
		}
		run(b)
	})
}
