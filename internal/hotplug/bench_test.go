package hotplug

import (
	"github.com/hotgpu/hotgpu/internal/testenv"

	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// BenchmarkAttachDetachV1 is one live attach and detach of a GPU on cgroup
// v1: Grant + CreateNode + Revoke + RemoveNode.
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
	dev := filepath.Join(root, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		b.Fatal(err)
	}
	// A container's /dev is a tmpfs; mknod on the ext4 of TempDir alone
	// costs ~0.6 ms here and would hide everything else.
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755"); err != nil {
		b.Fatalf("failed to mount a tmpfs /dev: %v", err)
	}
	b.Cleanup(func() { _ = unix.Unmount(dev, unix.MNT_DETACH) })
	nodes := []gpu.DeviceNode{{Path: "/dev/nvidia3", Major: gpu.NvidiaMajor, Minor: 3}}
	for b.Loop() {
		if err := acc.Grant(nodes); err != nil {
			b.Fatal(err)
		}
		if _, err := CreateNode(root, nodes[0], 0o666); err != nil {
			b.Fatal(err)
		}
		if err := acc.Revoke(nodes); err != nil {
			b.Fatal(err)
		}
		if err := RemoveNode(root, nodes[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHolders is one node-wide busy check for eight GPUs: every
// process's fds and mappings, as a detach does before it revokes anything.
func BenchmarkHolders(b *testing.B) {
	requireRoot(b)
	nodes := make([]gpu.DeviceNode, 8)
	for i := range nodes {
		nodes[i] = gpu.DeviceNode{Path: "/dev/nvidia" + strconv.Itoa(i), Major: 195, Minor: int64(i)}
	}
	procs, _ := os.ReadDir("/proc")
	b.ReportMetric(float64(len(procs)), "proc-entries")
	for b.Loop() {
		if _, _, err := Holders(nodes); err != nil {
			b.Fatal(err)
		}
	}
}
