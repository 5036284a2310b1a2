package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// Mem is a process's memory as /proc/<pid>/status and smaps_rollup tell it,
// in bytes.
type Mem struct {
	RSS  int64 // VmRSS: resident pages, private and file-backed
	Peak int64 // VmHWM: the most VmRSS has been
	Anon int64 // RssAnon: the process's own memory (heap, stacks)
	File int64 // RssFile: pages of mapped files, the binary's text first
	// FilePMD is the part of File mapped as whole 2 MiB folios
	// (FilePmdMapped): a kernel with large page-cache folios maps the
	// binary's text in 2 MiB pieces on first touch, so File grows with
	// the binary's size rather than with what runs.
	FilePMD int64
}

// Memory reads a process's Mem.
func Memory(pid int) (Mem, error) {
	var m Mem
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.Peak, "RssAnon": &m.Anon, "RssFile": &m.File, "FilePmdMapped": &m.FilePMD}
	for _, f := range []string{"status", "smaps_rollup"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			if f == "smaps_rollup" { // optional: FilePMD stays 0
				continue
			}
			return Mem{}, fmt.Errorf("failed to read memory of process %d: %w", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if p, want := fields[k]; ok && want {
				var kb int64
				fmt.Sscan(strings.TrimSpace(v), &kb)
				*p = kb << 10
			}
		}
	}
	return m, nil
}

// CPUTime returns the user+system CPU time a process has used.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("failed to read CPU time of process %d: %w", pid, err)
	}
	// The command name may hold spaces and parens: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// IdleCPU measures the CPU time a process uses over d.
func IdleCPU(pid int, d time.Duration) (used time.Duration, err error) {
	before, err := CPUTime(pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	after, err := CPUTime(pid)
	if err != nil {
		return 0, err
	}
	return after - before, nil
}
