package mountns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// inPrivateNS starts a process in a new, private mount namespace and
// returns its pid.
func inPrivateNS(t *testing.T) int {
	t.Helper()
	testenv.RequireRoot(t, "joins and mounts in another mount namespace")
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testenv.Skipf(t, "needs util-linux unshare: %v", err)
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	proc := "/proc/" + strconv.Itoa(cmd.Process.Pid)
	for { // unshare execs sleep once the namespace is made
		if exe, _ := os.Readlink(proc + "/exe"); filepath.Base(exe) == "sleep" {
			return cmd.Process.Pid
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readIn reads path as the mount namespace of pid shows it.
func readIn(t *testing.T, pid int, path string) (data string, writeErr error) {
	t.Helper()
	err := Enter(pid, func() error {
		b, err := os.ReadFile(path)
		data = string(b)
		if err == nil {
			writeErr = os.WriteFile(path, []byte("changed"), 0o644)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return data, writeErr
}

// TestAttachInAnotherNamespace: a host file cloned read-only here is
// mounted at its path under a root in another mount namespace; the mount
// point is created, the file is read-only there, and the caller's own
// namespace shows only the empty mount point. A symlink in the root is
// resolved inside it.
func TestAttachInAnotherNamespace(t *testing.T) {
	pid := inPrivateNS(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "libcuda.so.1")
	if err := os.WriteFile(src, []byte("driver"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, outside)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// /usr in the image points at a path that is also the host's outside
	// dir: it must resolve inside the root.
	if err := os.Symlink(outside, filepath.Join(root, "usr")); err != nil {
		t.Fatal(err)
	}
	tree, err := Clone(src, []string{"ro", "nosuid", "nodev", "bind"})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	target := "/usr/lib/libcuda.so.1"
	err = Enter(pid, func() error {
		r, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = Attach(r, []*Tree{tree}, []string{target})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	inRoot := filepath.Join(root, outside, "lib", "libcuda.so.1")
	data, werr := readIn(t, pid, inRoot)
	if data != "driver" || !errors.Is(werr, unix.EROFS) {
		t.Errorf("in the namespace: %s = %q, write err %v; want the driver file, read-only", inRoot, data, werr)
	}
	if b, err := os.ReadFile(inRoot); err != nil || len(b) != 0 {
		t.Errorf("here: %s = %q, %v; want the empty mount point only", inRoot, b, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the mount followed the image's symlink out of the root: %v", entries)
	}
}

// TestAttachLeavesOtherFiles: something that is not a file where the
// mount point should be (the image's FIFO) is left as it is, and refused.
func TestAttachLeavesOtherFiles(t *testing.T) {
	pid := inPrivateNS(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "lib")
	root := filepath.Join(dir, "rootfs")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "lib"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree, err := Clone(src, []string{"ro"})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	err = Enter(pid, func() error {
		r, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = Attach(r, []*Tree{tree}, []string{"/lib"})
		return err
	})
	if !errors.Is(err, ErrNotMountpoint) {
		t.Errorf("mount over a FIFO: err = %v, want ErrNotMountpoint", err)
	}
	if _, err := Clone(src, []string{"rw", "shared"}); err == nil {
		t.Error("an unsupported option was accepted")
	}
}

// TestAttachOnceAndAllOrNothing: a tree whose file is already at its
// target is not mounted again; when one mount point cannot be made, the
// ones made for the others are removed and nothing is mounted.
func TestAttachOnceAndAllOrNothing(t *testing.T) {
	pid := inPrivateNS(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "lib")
	root := filepath.Join(dir, "rootfs")
	if err := os.WriteFile(src, []byte("driver"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "etc", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	attach := func(targets ...string) (int, error) {
		var n int
		err := Enter(pid, func() error {
			r, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer r.Close()
			var trees []*Tree
			for range targets {
				tree, err := Clone(src, []string{"ro"})
				if err != nil {
					return err
				}
				defer tree.Close()
				trees = append(trees, tree)
			}
			n, err = Attach(r, trees, targets)
			return err
		})
		return n, err
	}
	if n, err := attach("/usr/lib/a.so", "/etc/fifo"); !errors.Is(err, ErrNotMountpoint) || n != 0 {
		t.Fatalf("mounted %d, err %v; want nothing and ErrNotMountpoint", n, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/lib/a.so")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mount point made for a.so was left: %v", err)
	}
	if n, err := attach("/usr/lib/a.so"); n != 1 || err != nil {
		t.Fatalf("first attach: mounted %d, err %v", n, err)
	}
	if n, err := attach("/usr/lib/a.so"); n != 0 || err != nil {
		t.Errorf("second attach: mounted %d, err %v; want the file left as it is", n, err)
	}
}
