package hotplug

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpfQueryAttr is bpf_attr for BPF_PROG_QUERY up to revision. Kernels from
// 6.17 write revision whatever size is passed (fixed in 7.2), so the struct
// must be that long even though only the first fields are used.
type bpfQueryAttr struct {
	targetFd        uint32
	attachType      uint32
	queryFlags      uint32
	attachFlags     uint32
	progIDs         uint64
	progCnt         uint32
	_               uint32
	progAttachFlags uint64
	linkIDs         uint64
	linkAttachFlags uint64
	revision        uint64
}

// maxCgroupProgs is the kernel's limit of programs of one type on a cgroup.
const maxCgroupProgs = 64

// devicePrograms returns the ids of the BPF_CGROUP_DEVICE programs attached
// directly to the cgroup directory dirFd (not the effective ones inherited
// from ancestors).
func devicePrograms(dirFd int) ([]uint32, error) {
	ids := make([]uint32, maxCgroupProgs)
	var pin runtime.Pinner
	pin.Pin(&ids[0])
	defer pin.Unpin()
	attr := bpfQueryAttr{
		targetFd:   uint32(dirFd),
		attachType: unix.BPF_CGROUP_DEVICE,
		progIDs:    uint64(uintptr(unsafe.Pointer(&ids[0]))),
		progCnt:    uint32(len(ids)),
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		if errors.Is(errno, unix.EPERM) {
			return nil, fmt.Errorf("failed to query device programs: %w (hotgpud needs CAP_SYS_ADMIN or CAP_BPF)", os.NewSyscallError("bpf", errno))
		}
		return nil, fmt.Errorf("failed to query device programs: %w", os.NewSyscallError("bpf", errno))
	}
	return ids[:attr.progCnt], nil
}

// openCgroupDir opens a cgroup2 directory for bpf(2).
func openCgroupDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("failed to open cgroup %s (has the container exited?): %w", dir, err)
	}
	return fd, nil
}
