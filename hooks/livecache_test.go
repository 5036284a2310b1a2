package hooks

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/mountns"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// runningContainer starts a process whose mount namespace and root are
// root's, as runc's pivot_root leaves a container, and returns its pid.
func runningContainer(t *testing.T, root string) int {
	t.Helper()
	testenv.RequireRoot(t, "makes a mount namespace and pivots into it")
	busybox := testenv.LookPath(t, "busybox", "apt-get install busybox-static")
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"dev", "old"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`mount --bind %[1]s %[1]s && cd %[1]s && pivot_root . old && exec /busybox sh -c '/busybox umount -l /old && exec /busybox sleep 600'`, root)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if out, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline"); string(out) == "/busybox\x00sleep\x00600\x00" {
			return cmd.Process.Pid
		}
		if i > 500 {
			t.Fatal("the container process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A live attach's linker cache lists the driver's libraries through a
// mount over the container's /etc/ld.so.cache: the container's own file
// (or its absence) is the same before, while and after, byte for byte and
// inode for inode, nothing else in the container is written (ldconfig's
// links and aux cache included), and Undo gives the container back its
// own view.
func TestLiveCacheNeverWritesTheContainersCache(t *testing.T) {
	ldconfig := findLDConfig()
	if ldconfig == "" {
		testenv.Skipf(t, "needs a host ldconfig (%s)", strings.Join(DefaultLDConfigs, ", "))
	}
	for _, own := range []bool{true, false} {
		t.Run(map[bool]string{true: "own cache", false: "no cache"}[own], func(t *testing.T) {
			root := drivertest.New(t, drivertest.Options{NoLDCache: true}).Dir
			if own {
				if err := os.WriteFile(filepath.Join(root, "etc/ld.so.cache"), []byte("the container's own cache"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pid := runningContainer(t, root)
			underlying := filepath.Join(root, "etc/ld.so.cache") // the host's view: below any mount in the container
			inside := fmt.Sprintf("/proc/%d/root/etc/ld.so.cache", pid)
			before := drivertest.FileSeen(t, underlying)
			if got := drivertest.FileSeen(t, inside); got != before {
				t.Fatalf("setup: the container sees %s, the host %s", got, before)
			}
			r, err := os.OpenFile(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()

			cm, err := mountLiveCache(context.Background(), pid, r, []string{drivertest.LibDir})
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(ldconfig, "-p", "-C", inside).CombinedOutput()
			if want := "libcuda.so.1 (libc6,x86-64) => " + drivertest.LibDir + "/libcuda.so.1"; err != nil || !strings.Contains(string(out), want) {
				t.Errorf("ldconfig -p of the container's cache: %v, lacks %q:\n%s", err, want, out)
			}
			// Underneath: the container's own file, or the empty file made
			// to mount on where it had none.
			want := before
			if !own {
				want = fmt.Sprintf("dev %d inode %d sha256 %x", cm.Made.Dev, cm.Made.Ino, sha256.Sum256(nil))
			}
			if got := drivertest.FileSeen(t, underlying); got != want {
				t.Errorf("the container's /etc/ld.so.cache underneath: %s -> %s, want %s", before, got, want)
			}
			if (cm.Made != mountns.FileID{}) == own {
				t.Errorf("made a mount point %v; want one only when the container had no cache", cm.Made)
			}
			for _, p := range []string{"dev", "var/cache/ldconfig"} {
				if ents, _ := os.ReadDir(filepath.Join(root, p)); len(ents) != 0 {
					t.Errorf("ldconfig wrote into the container's /%s: %v", p, ents)
				}
			}

			// What is not hotgpu's (by device and inode) is left.
			during := drivertest.FileSeen(t, inside)
			if left, err := mountns.Undo(pid, LDCachePath, mountns.FileID{Dev: 1, Ino: 1}); err != nil || !left {
				t.Errorf("Undo of a file that is not there = left %v, %v; want left", left, err)
			}
			if got := drivertest.FileSeen(t, inside); got != during {
				t.Errorf("Undo of something else changed the container's cache: %s -> %s", during, got)
			}

			left, err := mountns.Undo(pid, LDCachePath, cm.Mounted, cm.Made)
			if err != nil || left {
				t.Fatalf("Undo = left %v, %v", left, err)
			}
			if got := drivertest.FileSeen(t, inside); got != before {
				t.Errorf("after Undo the container sees %s, want its own %s", got, before)
			}
			if got := drivertest.FileSeen(t, underlying); got != before {
				t.Errorf("after Undo the container's own /etc/ld.so.cache is %s, was %s", got, before)
			}
		})
	}
}
