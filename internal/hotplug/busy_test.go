package hotplug

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// The helper holds a node under a name of its own, by an open fd or by a
// mapping whose fd it closed; Holders finds it by device number. The scan
// is node-wide, so other processes of the machine may show up too: only
// the helper's presence is asserted.
func TestHolders(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		verb  string
		major int64
		minor int64
	}{
		{"open fd", "hold", 1, 7},        // /dev/full
		{"mmap then close", "map", 1, 5}, // /dev/zero, which can be mapped
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startChild(t)
			path, node := hostNode(t, t.TempDir(), tt.major, tt.minor)
			other := gpu.DeviceNode{Path: "/dev/port", Major: 1, Minor: 4}
			if got := holdersOf(t, node, other); slices.Contains(got[node], c.pid) {
				t.Fatalf("Holders before %s = %v; want no helper", tt.verb, got)
			}
			if r := c.do(t, tt.verb+" "+path); r != "ok" {
				t.Fatalf("%s: %s", tt.verb, r)
			}
			got := holdersOf(t, node, other)
			if !slices.Contains(got[node], c.pid) {
				t.Errorf("Holders while held by %s = %v; want helper pid %d", tt.verb, got, c.pid)
			}
			if slices.Contains(got[other], c.pid) {
				t.Errorf("Holders says the helper holds %v: %v", other, got)
			}
			if r := c.do(t, "close"); r != "ok" {
				t.Fatalf("close: %s", r)
			}
			if got := holdersOf(t, node); slices.Contains(got[node], c.pid) {
				t.Errorf("Holders after close = %v; want no helper", got)
			}
		})
	}
}

// Two processes that map the same 300 files and, among them, the same node
// (one inode: its stat is shared by the scan) are both found, and a third
// node that only one of them maps is that one's alone.
func TestHoldersAmongManyMappings(t *testing.T) {
	requireRoot(t)
	files := mappedFiles(t, 300)
	path, node := hostNode(t, t.TempDir(), 1, 5) // /dev/zero, which can be mapped
	path2, node2 := hostNode(t, t.TempDir(), 1, 5)
	node2.Path = path2 // the same device under another inode
	a, b := startChild(t), startChild(t)
	for _, c := range []*child{a, b} {
		if r := c.do(t, "mapdir "+files); r != "ok" {
			t.Fatalf("mapdir: %s", r)
		}
		if r := c.do(t, "map "+path); r != "ok" {
			t.Fatalf("map: %s", r)
		}
	}
	got := holdersOf(t, node)
	if !slices.Contains(got[node], a.pid) || !slices.Contains(got[node], b.pid) {
		t.Errorf("Holders = %v; want both %d and %d", got, a.pid, b.pid)
	}
	if r := a.do(t, "close"); r != "ok" {
		t.Fatalf("close: %s", r)
	}
	if got := holdersOf(t, node); slices.Contains(got[node], a.pid) || !slices.Contains(got[node], b.pid) {
		t.Errorf("Holders after %d unmapped = %v; want %d only", a.pid, got, b.pid)
	}
}

// mappedFiles makes a directory of n one-page files for a helper to map.
func mappedFiles(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	page := make([]byte, os.Getpagesize())
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), page, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A process whose main thread exited while another runs on shows no fds or
// mappings in its own /proc entry; the scan finds what it holds through the
// live thread: an open fd, and a mapping whose fd it closed. A mapping of a
// node deleted since cannot be matched to its inode: it counts only when it
// maps device memory (as a driver's mmap does; /dev/zero's does not), which
// TestDeviceMapped covers.
func TestHoldersLeaderless(t *testing.T) {
	requireRoot(t)
	bin := buildLeaderless(t)
	for _, tt := range []struct {
		mode  string
		found bool
	}{{"open", true}, {"map", true}, {"map-unlinked", false}} {
		t.Run(tt.mode, func(t *testing.T) {
			path, node := hostNode(t, t.TempDir(), 1, 5) // /dev/zero, which can be mapped
			pid := startLeaderless(t, bin, tt.mode, path)
			if got := holdersOf(t, node); slices.Contains(got[node], pid) != tt.found {
				t.Errorf("Holders = %v; want pid %d found: %v", got, pid, tt.found)
			}
		})
	}
}

// buildLeaderless compiles testdata/leaderless.c.
func buildLeaderless(t *testing.T) string {
	t.Helper()
	cc := testenv.LookPath(t, "gcc", "make host-deps; it builds the leaderless helper")
	bin := filepath.Join(t.TempDir(), "leaderless")
	if out, err := exec.Command(cc, "-O2", "-pthread", "-o", bin, "testdata/leaderless.c").CombinedOutput(); err != nil {
		t.Fatalf("cc leaderless.c: %v\n%s", err, out)
	}
	return bin
}

// startLeaderless runs the helper and waits until its main thread is gone.
func startLeaderless(t *testing.T, bin, mode, path string) int {
	t.Helper()
	cmd := exec.Command(bin, mode, path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("leaderless %s: %q %v", mode, line, err)
	}
	pid := cmd.Process.Pid
	for range 500 { // the main thread exits right after "ready"
		if status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); bytes.Contains(status, []byte("State:\tZ")) {
			return pid
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("the main thread of leaderless %d did not exit", pid)
	return 0
}

func TestDeviceMapped(t *testing.T) {
	smaps := []byte(`7f0000000000-7f0000001000 r--p 00000000 00:06 4                          /dev/zero (deleted)
Size:                  4 kB
VmFlags: rd mr mw me ac sd
7f0000002000-7f0000003000 rw-s 00000000 00:06 9                          /dev/nvidia1 (deleted)
Size:                  4 kB
VmFlags: rd wr sh mr mw me ms io pf dc de dd sd
`)
	for _, tt := range []struct {
		start, end uint64
		want       bool
	}{
		{0x7f0000000000, 0x7f0000001000, false}, // page cache: not device memory
		{0x7f0000002000, 0x7f0000003000, true},  // io pf: a driver's mapping
		{0x7f0000004000, 0x7f0000005000, false}, // not in smaps
	} {
		if got := deviceMapped(smaps, [][2]uint64{{tt.start, tt.end}}); got != tt.want {
			t.Errorf("deviceMapped(%x-%x) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
	line := []byte("7f0000002000-7f0000003000 rw-s 00000000 00:06 9   /dev/a dir/nvidia1")
	if got := mapsLinePath(line); got != "/dev/a dir/nvidia1" {
		t.Errorf("mapsLinePath = %q", got)
	}
	if got := mapsLinePath(append(line, " (deleted)"...)); got != "" {
		t.Errorf("mapsLinePath of a deleted file = %q, want \"\"", got)
	}
}

// A skipped pid is not reported even while it holds the node.
func TestHoldersSkip(t *testing.T) {
	requireRoot(t)
	c := startChild(t)
	path, node := hostNode(t, t.TempDir(), 1, 7)
	if r := c.do(t, "hold "+path); r != "ok" {
		t.Fatalf("hold: %s", r)
	}
	got, _, err := Holders([]gpu.DeviceNode{node}, c.pid)
	if err != nil || slices.Contains(got[node], c.pid) {
		t.Fatalf("Holders skipping %d = %v, %v", c.pid, got, err)
	}
}

func holdersOf(t *testing.T, nodes ...gpu.DeviceNode) map[gpu.DeviceNode][]int {
	t.Helper()
	got, _, err := Holders(nodes)
	if err != nil {
		t.Fatalf("Holders: %v", err)
	}
	return got
}

func TestParseMapsLine(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		start, end uint64
		id         fileID
		ok         bool
	}{
		{"file", "00400000-00452000 r-xp 00000000 08:02 173521    /usr/bin/dbus-daemon",
			0x400000, 0x452000, fileID{dev: unix.Mkdev(8, 2), inode: 173521}, true},
		{"device node", "7f1c2a000000-7f1c2a001000 rw-s 00000000 00:05 1042 /dev/nvidia0",
			0x7f1c2a000000, 0x7f1c2a001000, fileID{dev: unix.Mkdev(0, 5), inode: 1042}, true},
		{"path with spaces", "1000-2000 r--p 00000000 fd:01 7 /tmp/a b (deleted)",
			0x1000, 0x2000, fileID{dev: unix.Mkdev(0xfd, 1), inode: 7}, true},
		{"hex minor", "1000-2000 r--p 00000000 103:1a 9", 0x1000, 0x2000, fileID{dev: unix.Mkdev(0x103, 0x1a), inode: 9}, true},
		{"anonymous", "7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]", 0, 0, fileID{}, false},
		{"no path", "7ffd1000-7ffd2000 rw-p 00000000 00:00 0", 0, 0, fileID{}, false},
		{"short", "7ffd1000-7ffd2000 rw-p 00000000", 0, 0, fileID{}, false},
		{"bad range", "7ffd1000 rw-p 00000000 08:02 5 /x", 0, 0, fileID{}, false},
		{"bad dev", "1000-2000 r--p 00000000 0802 5 /x", 0, 0, fileID{}, false},
		{"bad inode", "1000-2000 r--p 00000000 08:02 5x /x", 0, 0, fileID{}, false},
		{"range overflow", "11112222333344445-2000 r--p 00000000 08:02 5 /x", 0, 0, fileID{}, false},
		{"empty", "", 0, 0, fileID{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end, id, ok := parseMapsLine([]byte(tt.line))
			if ok != tt.ok || (ok && (start != tt.start || end != tt.end || id != tt.id)) {
				t.Errorf("parseMapsLine(%q) = %x, %x, %+v, %v; want %x, %x, %+v, %v",
					tt.line, start, end, id, ok, tt.start, tt.end, tt.id, tt.ok)
			}
		})
	}
}

// Kernel threads have no address space and are skipped without reading
// their fds and maps; a process, this one, is read.
func TestNoMemoryIsKernelThreadsOnly(t *testing.T) {
	kthread := kernelThread(t)
	for _, tc := range []struct {
		pid  int
		want bool
	}{{kthread, true}, {os.Getpid(), false}} {
		dir, err := unix.Open("/proc/"+strconv.Itoa(tc.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := noMemory(dir); got != tc.want {
			t.Errorf("noMemory(pid %d) = %v, want %v", tc.pid, got, tc.want)
		}
		unix.Close(dir)
	}
}

// kernelThread finds a kernel thread by its flags (PF_KTHREAD in field 9
// of /proc/PID/stat): kthreadd, pid 2 in the host's PID namespace.
func kernelThread(t *testing.T) int {
	t.Helper()
	const pfKthread = 0x00200000
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfKthread != 0 {
			return pid
		}
	}
	t.Fatal("no kernel thread in /proc (a PID namespace of its own?): run on the host")
	return 0
}
