package hotplug

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// helperEnv makes the test binary act as a stand-in container process that
// opens files on request and answers with the errno it got.
const helperEnv = "HOTPLUG_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		runHelper(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper serves "open PATH" (open and close), "hold PATH" (keep open),
// "map PATH" (map a page of it privately, then close it), "mapdir DIR" (map
// every file in DIR so) and "close" (close held files and unmap), answering
// "ok" or an errno name per line.
func runHelper(in io.Reader, out io.Writer) {
	var held []*os.File
	var maps [][]byte
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(sc.Text(), " ")
		var err error
		switch verb {
		case "open", "hold":
			var f *os.File
			if f, err = os.OpenFile(arg, os.O_RDWR, 0); err == nil {
				if verb == "hold" {
					held = append(held, f)
				} else {
					f.Close()
				}
			}
		case "map":
			var m []byte
			if m, err = mapClosed(arg); err == nil {
				maps = append(maps, m)
			}
		case "mapdir":
			var ents []os.DirEntry
			ents, err = os.ReadDir(arg)
			for _, e := range ents {
				var m []byte
				if m, err = mapClosed(filepath.Join(arg, e.Name())); err != nil {
					break
				}
				maps = append(maps, m)
			}
		case "close":
			for _, f := range held {
				f.Close()
			}
			for _, m := range maps {
				_ = unix.Munmap(m)
			}
			held, maps = nil, nil
		}
		fmt.Fprintln(out, errnoName(err))
	}
}

// mapClosed maps a page of path and closes the fd: the mapping alone keeps
// the file, as a CUDA context's mappings of /dev/nvidiaN do.
func mapClosed(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE)
}

func errnoName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// child is a helper process, killed at the end of the test.
type child struct {
	pid int
	in  io.Writer
	out *bufio.Reader
}

func startChild(t testing.TB) *child {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = []string{helperEnv + "=1"}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start helper: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c := &child{pid: cmd.Process.Pid, in: in, out: bufio.NewReader(outPipe)}
	if got := c.read(t); got != "ready" {
		t.Fatalf("helper said %q, want ready", got)
	}
	return c
}

func (c *child) read(t testing.TB) string {
	t.Helper()
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("failed to read from helper: %v", err)
	}
	return strings.TrimSpace(line)
}

// do sends one command to the helper and returns its answer.
func (c *child) do(t testing.TB, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		t.Fatalf("failed to write to helper: %v", err)
	}
	return c.read(t)
}

// expectOpen checks what opening path from inside the child gives.
func (c *child) expectOpen(t testing.TB, path, want string) {
	t.Helper()
	if got := c.do(t, "open "+path); got != want {
		t.Errorf("open %s in child: got %s, want %s", path, got, want)
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: creates cgroups, device nodes and bpf programs")
	}
}

// ownTarget is this test process's own cgroups: the parents of test cgroups.
func ownTarget(t testing.TB) *Target {
	t.Helper()
	self, err := TargetFromPID(os.Getpid())
	if err != nil {
		testenv.Skipf(t, "no cgroup hierarchy to test with: %v", err)
	}
	return self
}

// newCgroup makes a child cgroup of parent, removed at the end of the test
// after the processes in it are gone (register it before starting them).
func newCgroup(t testing.TB, parent string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "hotgpu-test-")
	if err != nil {
		t.Fatalf("failed to create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		pids, _ := readPids(dir)
		for _, pid := range pids {
			_ = os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		}
		var err error
		for range 50 { // a killed process leaves its cgroup a moment after wait
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("failed to remove test cgroup %s: %v", dir, err)
	})
	return dir
}

func readPids(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func writeCgroup(t testing.TB, dir, file, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0); err != nil {
		t.Fatalf("failed to write %q to %s/%s: %v", data, dir, file, err)
	}
}

// hostNode makes a real character device on the host. 195 has no driver
// here, so once the cgroup lets an open through it fails with ENXIO.
func hostNode(t testing.TB, dir string, major, minor int64) (string, gpu.DeviceNode) {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("dev%d_%d", major, minor))
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(major), uint32(minor)))); err != nil {
		t.Fatalf("failed to mknod %s: %v", p, err)
	}
	return p, gpu.DeviceNode{Path: "/dev/nvidia" + strconv.FormatInt(minor, 10), Major: major, Minor: minor}
}

func closeFd(fd int) { _ = unix.Close(fd) }
