package hotplug

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// StartTime returns when process pid started, in clock ticks after boot
// (field 22 of /proc/<pid>/stat). A pid and its start time name one process
// for good: a reused pid has another start time.
func StartTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("failed to parse /proc/%d/stat: %w", pid, err)
	}
	return start, nil
}

// parentPID returns the parent of process pid (field 4 of /proc/<pid>/stat).
func parentPID(pid int) (int, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("failed to parse /proc/%d/stat: %w", pid, err)
	}
	return ppid, nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may hold spaces and parentheses): f[0] is field 3, the state.
func statFields(pid int) ([]string, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, fmt.Errorf("failed to read process %d (has it exited?): %w", pid, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("failed to parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("failed to parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// hostRooted reports whether process pid's root directory is the host's:
// that of pid 1, or hotgpud's own.
func hostRooted(pid int) bool {
	var p syscall.Stat_t
	if syscall.Stat("/proc/"+strconv.Itoa(pid)+"/root", &p) != nil {
		return false
	}
	for _, other := range []string{"/proc/1/root", "/proc/self/root"} {
		var o syscall.Stat_t
		if syscall.Stat(other, &o) == nil && o.Dev == p.Dev && o.Ino == p.Ino {
			return true
		}
	}
	return false
}
