package hotplug

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Holders scans every process of the node once and returns, for each of
// nodes that some process holds, the pids holding it, and the pids it was
// not allowed to inspect. A process holds a node
// when one of its fds is the node or one of its memory mappings is (a mapping
// outlives the fd it was made from). Pids in skip are not scanned (hotgpud
// itself, whose NVML handles hold every GPU).
//
// The scan is node-wide on purpose: a holder in a sub-cgroup of the
// container, or outside it with an fd it was passed (SCM_RIGHTS), keeps
// using the GPU after its cgroup rule is revoked, since the device cgroup
// only checks open(2).
//
// It compares device numbers, never paths: paths are the holder's own view
// and can be faked. The kernel resolves /proc/PID/fd/N and
// /proc/PID/map_files/RANGE to the open file itself, so nothing is looked up
// through a container's mounts; the stat asks for cached attributes only, so
// a file on a hung FUSE or NFS mount does not stall it. Processes that exit
// mid-scan are skipped. A process even root may not inspect (EACCES: e.g.
// the init of a sandbox that hotgpud runs in) is listed in unreadable for
// the caller to report; any other failure is an error. Threads that
// unshared their fd table (clone without CLONE_FILES) are not scanned apart
// from their process.
func Holders(nodes []gpu.DeviceNode, skip ...int) (held map[gpu.DeviceNode][]int, unreadable []int, err error) {
	want := map[uint64]gpu.DeviceNode{}
	for _, n := range nodes {
		if err := checkNode(n); err != nil {
			return nil, nil, err
		}
		want[unix.Mkdev(uint32(n.Major), uint32(n.Minor))] = n
	}
	held = map[gpu.DeviceNode][]int{}
	if len(want) == 0 {
		return held, nil, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil, fmt.Errorf("failed to list processes: %w", err)
	}
	s := scan{want: want, files: map[fileID]uint64{}}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(skip, pid) {
			continue
		}
		devs, err := s.process(pid)
		if errors.Is(err, unix.EACCES) {
			unreadable = append(unreadable, pid)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		for _, rdev := range devs {
			n := want[rdev]
			held[n] = append(held[n], pid)
		}
	}
	return held, unreadable, nil
}

// fileID names an inode the way /proc/PID/maps does: filesystem and inode.
type fileID struct {
	dev   string
	inode uint64
}

// scan is one walk of /proc. files caches what each mapped inode is (its
// rdev when it is a character device, else 0): every process maps the same
// libraries, so each is stat'ed once per walk, not once per process.
type scan struct {
	want  map[uint64]gpu.DeviceNode
	files map[fileID]uint64
	buf   []byte
}

// process returns the device numbers among s.want that pid holds.
func (s *scan) process(pid int) ([]uint64, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	held, err := s.fds(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read the open files of pid %d: %w", pid, err)
	}
	mapped, err := s.maps(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read the memory mappings of pid %d: %w", pid, err)
	}
	for _, d := range mapped {
		if !slices.Contains(held, d) {
			held = append(held, d)
		}
	}
	return held, nil
}

func (s *scan) fds(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	var held []uint64
	for _, e := range ents {
		rdev, _, err := charDev(dir + "/fd/" + e.Name())
		if err != nil {
			return nil, err
		}
		if _, ok := s.want[rdev]; ok && rdev != 0 && !slices.Contains(held, rdev) {
			held = append(held, rdev)
		}
	}
	return held, nil
}

// maps reads /proc/PID/maps and stats the file behind each file-backed
// mapping through map_files. The dev column of maps is the filesystem a
// node lives on, not the device it stands for, hence the stat.
func (s *scan) maps(dir string) ([]uint64, error) {
	data, err := s.read(dir + "/maps")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	var held []uint64
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rng, id, ok := parseMapsLine(sc.Bytes())
		if !ok {
			continue
		}
		rdev, seen := s.files[id]
		if !seen {
			var there bool
			if rdev, there, err = charDev(dir + "/map_files/" + rng); err != nil {
				return nil, err
			}
			if there { // an unmapped range says nothing about the inode
				s.files[id] = rdev
			}
		}
		if _, ok := s.want[rdev]; ok && rdev != 0 && !slices.Contains(held, rdev) {
			held = append(held, rdev)
		}
	}
	return held, sc.Err()
}

func (s *scan) read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := bytes.NewBuffer(s.buf[:0])
	_, err = buf.ReadFrom(f)
	s.buf = buf.Bytes()
	return s.buf, err
}

// parseMapsLine returns the map_files name ("start-end" in unpadded hex) and
// the inode of a file-backed line of /proc/PID/maps:
// "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon".
func parseMapsLine(line []byte) (rng string, id fileID, ok bool) {
	f := bytes.Fields(line)
	if len(f) < 5 {
		return "", fileID{}, false
	}
	ino, err := strconv.ParseUint(string(f[4]), 10, 64)
	if err != nil || ino == 0 {
		return "", fileID{}, false // anonymous, heap, stack, vdso
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	if !found || err1 != nil || err2 != nil {
		return "", fileID{}, false
	}
	rng = strconv.FormatUint(start, 16) + "-" + strconv.FormatUint(end, 16)
	return rng, fileID{dev: string(f[3]), inode: ino}, true
}

// charDev returns the device number of the file a /proc magic link stands
// for when it is a character device, else 0; there is false when the fd or
// mapping went away.
func charDev(link string) (rdev uint64, there bool, err error) {
	var stx unix.Statx_t
	err = unix.Statx(unix.AT_FDCWD, link, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx)
	if err != nil {
		if gone(err) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("failed to stat %s: %w", link, err)
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFCHR {
		return 0, true, nil
	}
	return unix.Mkdev(stx.Rdev_major, stx.Rdev_minor), true, nil
}

// gone reports errors of a process, fd or mapping that went away mid-scan.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
