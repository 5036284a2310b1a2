package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where the figures were taken.
type Machine struct {
	When       time.Time
	CPU        string
	Cores      int
	MemGiB     float64
	Kernel     string
	Cgroups    string
	Go         string
	Containerd string
	Runc       string
	LoadStart  string // /proc/loadavg when the run started: how busy the box was
	LoadEnd    string
}

// ProbeMachine reads the machine's description.
func ProbeMachine() Machine {
	m := Machine{When: time.Now(), Cores: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadavg()}
	m.CPU = cpuinfoField("model name")
	if kb := meminfoKiB("MemTotal"); kb > 0 {
		m.MemGiB = float64(kb) / (1 << 20)
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.Cgroups = cgroupMode()
	return m
}

// Short is the table's machine column.
func (m Machine) Short() string {
	return fmt.Sprintf("%dc/%.0fG", m.Cores, m.MemGiB)
}

// Long is the paragraph above the table.
func (m Machine) Long() string {
	return fmt.Sprintf("%d × %s, %.1f GiB RAM, Linux %s, %s, %s, containerd %s, runc %s, no GPU (8 simulated A100s); load average at start %s, at end %s (a shared VM: other work ran alongside).",
		m.Cores, m.CPU, m.MemGiB, m.Kernel, m.Cgroups, m.Go, orUnknown(m.Containerd), orUnknown(m.Runc), m.LoadStart, orUnknown(m.LoadEnd))
}

func orUnknown(s string) string {
	if s == "" {
		return "(not run)"
	}
	return s
}

// BinaryVersion runs `bin args...` and returns the first line of its output.
func BinaryVersion(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// LoadNow returns the current load average.
func LoadNow() string { return loadavg() }

func cpuinfoField(key string) string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func meminfoKiB(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			var n int64
			fmt.Sscan(strings.TrimSpace(v), &n)
			return n
		}
	}
	return 0
}

func cgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "cgroup v2"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		return "cgroup v1 (hybrid, cgroup2 at /sys/fs/cgroup/unified)"
	}
	return "cgroup v1"
}
