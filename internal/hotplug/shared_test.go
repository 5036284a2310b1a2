package hotplug

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// hostDevMount mounts a private tmpfs holding nvidia1 (a stand-in for the
// host's /dev, never the real one) and bind-mounts it at root/dev, as
// `docker run -v /dev:/dev` does. It returns the stand-in.
func hostDevMount(t *testing.T, root string) string {
	t.Helper()
	hostDev := t.TempDir()
	if err := unix.Mount("hotgpu-test-dev", hostDev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
		t.Fatalf("failed to mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(hostDev, unix.MNT_DETACH) })
	if err := unix.Mknod(filepath.Join(hostDev, "nvidia1"), unix.S_IFCHR|0o666, int(unix.Mkdev(195, 1))); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(root, "dev")
	mustMkdir(t, dev)
	if err := unix.Mount(hostDev, dev, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("failed to bind-mount the host /dev stand-in: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dev, unix.MNT_DETACH) })
	return hostDev
}

// A container whose /dev is a mount from the host: hotgpu makes nothing
// there, neither a node nor a directory, and says why (ErrSharedDir), for a
// node the host has and one it lacks.
func TestCreateNodeRefusesHostDevMount(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	hostDev := hostDevMount(t, root)
	before := snapshot(t, hostDev)
	for _, n := range []gpu.DeviceNode{
		nvidia1,
		{Path: "/dev/nvidia2", Major: gpu.NvidiaMajor, Minor: 2},
		{Path: "/dev/nvidia-caps/nvidia-cap1", Major: 511, Minor: 1},
	} {
		if made, err := CreateNode(root, n, 0o666); !errors.Is(err, ErrSharedDir) || made != nil {
			t.Errorf("CreateNode(%s) = %+v, %v; want ErrSharedDir", n.Path, made, err)
		}
	}
	made, err := CreateNodes(root, []gpu.DeviceNode{nvidia1}, 0o666)
	if !errors.Is(err, ErrSharedDir) || len(made) != 0 {
		t.Errorf("CreateNodes = %+v, %v; want ErrSharedDir", made, err)
	}
	if after := snapshot(t, hostDev); !equalSnapshots(before, after) {
		t.Errorf("the host /dev stand-in changed:\nbefore %v\nafter  %v", before, after)
	}
}

// The host's /dev itself is recognised by its inode, mounted or not.
func TestHostViewKnowsTheHostDev(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	mustMkdir(t, filepath.Join(root, "dev"))
	own, err := newHostView(root)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(root, "dev"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := own.check(fd, "/dev"); err != nil {
		t.Fatalf("the container's own /dev: %v", err)
	}
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	own.hostDev = append(own.hostDev, [2]uint64{st.Dev, st.Ino}) // as if it were the host's
	if err := own.check(fd, "/dev"); !errors.Is(err, ErrSharedDir) {
		t.Fatalf("the host's /dev: %v, want ErrSharedDir", err)
	}
}

// A node hotgpu made and the container then replaced (renamed away and
// made again, or swapped for another file) is not removed: only the very
// inode hotgpu made is.
func TestRemoveMadeLeavesAReplacedNode(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, p string)
	}{
		{name: "same device, new inode", replace: func(t *testing.T, p string) {
			must(t, os.Rename(p, p+".moved")) // keeps the old inode alive, so it cannot be reused
			must(t, unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(195, 1))))
		}},
		{name: "regular file", replace: func(t *testing.T, p string) {
			must(t, os.Rename(p, p+".moved"))
			must(t, os.WriteFile(p, []byte("mine"), 0o600))
		}},
		{name: "symlink", replace: func(t *testing.T, p string) {
			must(t, os.Rename(p, p+".moved"))
			must(t, os.Symlink("/etc/passwd", p))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mustMkdir(t, filepath.Join(root, "dev"))
			made, err := CreateNode(root, nvidia1, 0o666)
			if err != nil || made == nil {
				t.Fatalf("CreateNode = %+v, %v", made, err)
			}
			p := filepath.Join(root, nvidia1.Path)
			tc.replace(t, p)
			before := statNode(t, p)
			if err := RemoveMade(root, *made); !errors.Is(err, ErrNotMade) {
				t.Errorf("RemoveMade: %v, want ErrNotMade", err)
			}
			if after := statNode(t, p); after.Ino != before.Ino || after.Mode != before.Mode {
				t.Errorf("the container's file changed: %+v -> %+v", before, after)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
