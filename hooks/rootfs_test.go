package hooks

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestContainerRootNeverLeavesRoot plays a hook at prestart, before
// pivot_root: the "container" is this process (its root is the host's), the
// rootfs a temp dir. A /dev the image made a symlink to a host directory must
// not get a node; a real /dev must.
func TestContainerRootNeverLeavesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: creates device nodes")
	}
	node := gpu.DeviceNode{Path: "/dev/nvidia0", Major: gpu.NvidiaMajor, Minor: 0}
	tests := []struct {
		name   string
		setup  func(t *testing.T, rootfs, host string)
		unsafe bool
	}{
		{"real /dev", func(t *testing.T, rootfs, host string) { must(t, os.Mkdir(filepath.Join(rootfs, "dev"), 0o755)) }, false},
		{"absolute symlink /dev", func(t *testing.T, rootfs, host string) { must(t, os.Symlink(host, filepath.Join(rootfs, "dev"))) }, true},
		{"relative symlink /dev", func(t *testing.T, rootfs, host string) {
			must(t, os.Symlink("../../../../../../../.."+host, filepath.Join(rootfs, "dev")))
		}, true},
		{"symlinked node", func(t *testing.T, rootfs, host string) {
			must(t, os.Mkdir(filepath.Join(rootfs, "dev"), 0o755))
			must(t, os.Symlink(filepath.Join(host, "victim"), filepath.Join(rootfs, "dev", "nvidia0")))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs, host := t.TempDir(), t.TempDir()
			tt.setup(t, rootfs, host)
			root, err := openContainerRoot(os.Getpid(), rootfs)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			_, err = hotplug.CreateNode(fdPath(root), node, gpu.NodeMode)
			if entries, _ := os.ReadDir(host); len(entries) != 0 {
				t.Fatalf("wrote on the host: %v (err %v)", entries, err)
			}
			if tt.unsafe != (err != nil) {
				t.Fatalf("err = %v, want unsafe=%t", err, tt.unsafe)
			}
			if tt.unsafe && !errors.Is(err, hotplug.ErrUnsafePath) {
				t.Errorf("err = %v, want ErrUnsafePath", err)
			}
			if !tt.unsafe {
				if fi, err := os.Lstat(filepath.Join(rootfs, "dev", "nvidia0")); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
					t.Errorf("no char device in the rootfs: %v %v", fi, err)
				}
			}
		})
	}
}

func TestContainerRootMustBeTheBundles(t *testing.T) {
	if _, err := openContainerRoot(os.Getpid(), filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing rootfs was accepted")
	}
	if _, err := openContainerRoot(1<<22+7, t.TempDir()); err == nil {
		t.Error("a pid that does not exist was accepted")
	}
}
