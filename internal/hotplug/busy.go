package hotplug

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// OpenBy returns the pids among pids (e.g. Target.Procs) that hold node
// open. It compares device numbers, not paths: an fd's link shows the path
// inside the container, which may differ from node.Path and can be faked.
// Processes that exit during the scan are skipped.
//
// It does not see mappings whose fd was closed; the NVIDIA driver keeps an
// fd open for as long as a CUDA context lives. Like lsof it stats every
// file a process holds, so a file on a hung FUSE mount can stall it.
func OpenBy(pids []int, node gpu.DeviceNode) ([]int, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	want := unix.Mkdev(uint32(node.Major), uint32(node.Minor))
	var out []int
	for _, pid := range pids {
		holds, err := holdsDevice(pid, want)
		if err != nil {
			return nil, err
		}
		if holds {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func holdsDevice(pid int, rdev uint64) (bool, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		if gone(err) {
			return false, nil
		}
		return false, fmt.Errorf("failed to list open files of pid %d: %w", pid, err)
	}
	for _, e := range ents {
		link, err := os.Readlink(dir + e.Name())
		if err != nil || !strings.HasPrefix(link, "/") {
			continue // gone, or a socket, pipe or anon inode: never a device node
		}
		var st unix.Stat_t
		if err := unix.Stat(dir+e.Name(), &st); err != nil {
			if gone(err) {
				continue
			}
			return false, fmt.Errorf("failed to stat fd %s of pid %d: %w", e.Name(), pid, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == rdev {
			return true, nil
		}
	}
	return false, nil
}

// gone reports errors of a process or fd that went away mid-scan.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
