package apiserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerGroups returns the supplementary groups of the process that connected
// on fd, as they were at connect time (SO_PEERGROUPS, Linux 4.13). On an
// older kernel they are read from /proc/<pid>/status instead, which is what
// the process holds now.
func peerGroups(fd int, pid int32) ([]uint32, error) {
	gids, err := sockPeerGroups(fd)
	if errors.Is(err, unix.ENOPROTOOPT) && pid > 0 {
		return procGroups("/proc/" + strconv.Itoa(int(pid)) + "/status")
	}
	return gids, err
}

// sockPeerGroups is getsockopt(SO_PEERGROUPS): an array of gid_t. (x/sys's
// GetsockoptString cuts the array at its first zero byte.)
func sockPeerGroups(fd int) ([]uint32, error) {
	gids := make([]uint32, 32)
	for {
		size := uint32(len(gids) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&gids[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && int(size/4) > len(gids):
			gids = make([]uint32, size/4) // the kernel says how many there are
		case errno != 0:
			return nil, errno
		default:
			return gids[:size/4], nil
		}
	}
}

// procGroups reads the "Groups:" line of a /proc/<pid>/status file.
func procGroups(path string) ([]uint32, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var gids []uint32
		for _, f := range strings.Fields(rest) {
			g, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("failed to read groups from %s: %q is not a gid", path, f)
			}
			gids = append(gids, uint32(g))
		}
		return gids, nil
	}
	return nil, fmt.Errorf("failed to read groups from %s: no Groups line", path)
}
