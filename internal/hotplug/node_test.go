package hotplug

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

var nvidia1 = gpu.DeviceNode{Path: "/dev/nvidia1", Major: gpu.NvidiaMajor, Minor: 1}

func statNode(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func TestCreateRemoveNode(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0o077) // the mode must not depend on hotgpud's umask
	defer unix.Umask(old)
	var made *Made
	for i := range 2 { // idempotent; only the first call makes the node
		m, err := CreateNode(root, nvidia1, 0o666)
		if err != nil {
			t.Fatalf("CreateNode: %v", err)
		}
		if (m != nil) != (i == 0) {
			t.Fatalf("call %d: made = %+v", i, m)
		}
		if i == 0 {
			made = m
		}
	}
	st := statNode(t, filepath.Join(root, "dev/nvidia1"))
	if st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(195, 1) {
		t.Errorf("node mode %o rdev %x, want char 0666 195:1", st.Mode, st.Rdev)
	}
	if *made != (Made{Path: nvidia1.Path, Ino: st.Ino, Dev: st.Dev, Rdev: st.Rdev}) {
		t.Errorf("made = %+v, want the node's inode %d on device %d", *made, st.Ino, st.Dev)
	}
	for range 2 {
		if err := RemoveMade(root, *made); err != nil {
			t.Fatalf("RemoveMade: %v", err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "dev/nvidia1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node still there after RemoveMade: %v", err)
	}
}

func TestCreateNodeMakesParents(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	cap1 := gpu.DeviceNode{Path: "/dev/nvidia-caps/nvidia-cap1", Major: 511, Minor: 1}
	if _, err := CreateNode(root, cap1, 0o444); err != nil {
		t.Fatalf("CreateNode: %v", err)
	}
	if st := statNode(t, filepath.Join(root, cap1.Path)); st.Mode != unix.S_IFCHR|0o444 {
		t.Errorf("node mode %o, want char 0444", st.Mode)
	}
}

// On failure CreateNode undoes the directories openDir made on the way, and
// only those.
func TestOpenDirUndo(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	mustMkdir(t, filepath.Join(root, "dev"))
	own, err := newHostView(root)
	if err != nil {
		t.Fatal(err)
	}
	h, err := openDir(root, "/dev/a/b/", own)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.created) != 2 {
		t.Errorf("openDir made %d directories, want 2", len(h.created))
	}
	h.undo()
	if _, err := os.Lstat(filepath.Join(root, "dev/a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev/a left behind: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "dev")); err != nil {
		t.Errorf("undo removed the existing dev: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "dev/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateNode(root, gpu.DeviceNode{Path: "/dev/f/c/nvidia1", Major: 195, Minor: 1}, 0o666); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("CreateNode through a regular file: %v, want ErrUnsafePath", err)
	}
}

// The container controls every path below its root. Whatever it links to,
// hotgpu must neither create, chmod nor remove anything outside the root.
func TestNodeSymlinkAttacks(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root, victim string) // victim: a host dir outside root
		node  gpu.DeviceNode
	}{
		{name: "dev is a symlink to a host dir", node: nvidia1, setup: func(t *testing.T, root, victim string) {
			mustSymlink(t, victim, filepath.Join(root, "dev"))
		}},
		{name: "dev is a relative symlink out", node: nvidia1, setup: func(t *testing.T, root, victim string) {
			mustSymlink(t, "../../../../../../../.."+victim, filepath.Join(root, "dev"))
		}},
		{name: "node is a symlink to a host file", node: nvidia1, setup: func(t *testing.T, root, victim string) {
			mustMkdir(t, filepath.Join(root, "dev"))
			mustSymlink(t, filepath.Join(victim, "passwd"), filepath.Join(root, "dev/nvidia1"))
		}},
		{name: "node is a symlink to a host device", node: nvidia1, setup: func(t *testing.T, root, victim string) {
			mustMkdir(t, filepath.Join(root, "dev"))
			mustSymlink(t, filepath.Join(victim, "nvidia1"), filepath.Join(root, "dev/nvidia1"))
		}},
		{name: "caps dir is a symlink", node: gpu.DeviceNode{Path: "/dev/nvidia-caps/nvidia1", Major: 195, Minor: 1}, setup: func(t *testing.T, root, victim string) {
			mustMkdir(t, filepath.Join(root, "dev"))
			mustSymlink(t, victim, filepath.Join(root, "dev/nvidia-caps"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, victim := t.TempDir(), t.TempDir()
			passwd := filepath.Join(victim, "passwd")
			if err := os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			hostNode := filepath.Join(victim, "nvidia1")
			if err := unix.Mknod(hostNode, unix.S_IFCHR|0o600, int(unix.Mkdev(195, 1))); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, victim)
			tc.setup(t, root, victim)

			if _, err := CreateNode(root, tc.node, 0o666); !errors.Is(err, ErrUnsafePath) {
				t.Errorf("CreateNode: %v, want ErrUnsafePath", err)
			}
			// Even a record naming the host's own node removes nothing.
			host := statNode(t, hostNode)
			err := RemoveMade(root, Made{Path: tc.node.Path, Ino: host.Ino, Dev: host.Dev, Rdev: host.Rdev})
			if !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrNotMade) {
				t.Errorf("RemoveMade: %v, want ErrUnsafePath or ErrNotMade", err)
			}
			if after := snapshot(t, victim); !equalSnapshots(before, after) {
				t.Errorf("host dir changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestNodeNotADevice(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p string)
	}{
		{name: "regular file", setup: func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "other device", setup: func(t *testing.T, p string) {
			if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(195, 2))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "directory", setup: func(t *testing.T, p string) { mustMkdir(t, p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mustMkdir(t, filepath.Join(root, "dev"))
			p := filepath.Join(root, "dev/nvidia1")
			tc.setup(t, p)
			before := statNode(t, p)
			if _, err := CreateNode(root, nvidia1, 0o666); !errors.Is(err, ErrUnsafePath) {
				t.Errorf("CreateNode: %v, want ErrUnsafePath", err)
			}
			if err := RemoveMade(root, Made{Path: nvidia1.Path, Ino: before.Ino, Dev: before.Dev, Rdev: unix.Mkdev(195, 1)}); !errors.Is(err, ErrNotMade) {
				t.Errorf("RemoveMade: %v, want ErrNotMade", err)
			}
			if after := statNode(t, p); after.Mode != before.Mode || after.Rdev != before.Rdev || after.Ino != before.Ino {
				t.Errorf("file changed: mode %o -> %o", before.Mode, after.Mode)
			}
		})
	}
}

func TestSplitNodePath(t *testing.T) {
	for _, p := range []string{"", "/", "dev/nvidia0", "/dev/../etc/passwd", "/dev//nvidia0", "/dev/nvidia0/"} {
		if _, _, err := splitNodePath(p); err == nil {
			t.Errorf("splitNodePath(%q) accepted", p)
		}
	}
	if dir, name, err := splitNodePath("/dev/nvidia-caps/nvidia-cap1"); err != nil || dir != "/dev/nvidia-caps/" || name != "nvidia-cap1" {
		t.Errorf("splitNodePath = %q %q %v", dir, name, err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

// snapshot records name, mode and size of every entry of dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		st := statNode(t, filepath.Join(dir, e.Name()))
		m[e.Name()] = fmt.Sprintf("mode=%o size=%d rdev=%x", st.Mode, st.Size, st.Rdev)
	}
	return m
}

func equalSnapshots(a, b map[string]string) bool { return maps.Equal(a, b) }
