package hotplug

import (
	"bytes"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// leaderless scans the process of proc, whose /proc entry has no address
// space. That is a kernel thread or a zombie, which hold nothing, or a
// process whose main thread exited (pthread_exit, or the exit system call)
// while its other threads run on: it can hold a GPU like any other, but its
// own entry shows no fds, maps or map_files. The scan then goes through a
// live thread's entry (/proc/PID/task/TID): its fds as for any process (the
// threads share one table), and its mappings from the thread's maps. The
// kernel keeps map_files for the main thread only, so each mapped file is
// stat'ed by its path in the process's root instead, and taken only when
// that path still is the very inode the mapping shows (filesystem and
// inode number): a path names nothing reliably, an inode does. A mapping
// that cannot be matched so (its file deleted, renamed or out of reach)
// and that maps device memory (VmFlags io, pf or mm in smaps: what a
// driver's mmap makes, never a file's page cache) counts as holding every
// node asked about: the scan cannot tell which device it is, and it does
// not hand on a GPU it cannot rule out.
func (s *scan) leaderless(proc int) ([]uint64, error) {
	// procfs counts a task directory's links as 2 + its threads: one stat
	// tells a kernel thread or a zombie (one thread or none) from a process
	// with threads left, without listing them.
	var st unix.Statx_t
	if err := unix.Statx(proc, "task", unix.AT_STATX_DONT_SYNC, unix.STATX_NLINK, &st); err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	if st.Nlink <= 3 {
		return nil, nil
	}
	thread, err := liveThread(proc)
	if err != nil || thread < 0 {
		return nil, err
	}
	defer unix.Close(thread)
	held, err := s.fds(thread)
	if err != nil {
		return nil, err
	}
	mapped, err := s.threadMaps(thread)
	if err != nil {
		return nil, err
	}
	for _, d := range mapped {
		if !slices.Contains(held, d) {
			held = append(held, d)
		}
	}
	return held, nil
}

// liveThread returns an O_PATH handle on /proc/PID/task/TID of a thread of
// proc's process that has an address space, or -1 when none is left.
func liveThread(proc int) (int, error) {
	tasks, err := unix.Openat(proc, "task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return -1, nil
		}
		return -1, err
	}
	defer unix.Close(tasks)
	var dents [4096]byte
	thread := -1
	err = dirents(tasks, dents[:], func(name string) (bool, error) {
		t, err := unix.Openat(tasks, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		switch {
		case gone(err):
			return false, nil
		case err != nil:
			return true, err
		case noMemory(t):
			unix.Close(t)
			return false, nil
		}
		thread = t
		return true, nil
	})
	return thread, err
}

// threadMaps returns the device numbers among s.want that the mappings in
// thread's maps are, as leaderless says.
func (s *scan) threadMaps(thread int) ([]uint64, error) {
	root, err := unix.Openat(thread, "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	defer unix.Close(root)
	data, err := s.read(thread, "maps")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	var held []uint64
	var unmatched [][2]uint64
	for line := range bytes.Lines(data) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		start, end, id, ok := parseMapsLine(line)
		if !ok {
			continue
		}
		rdev, ok := s.files[id]
		if !ok {
			if rdev, ok = statMatching(root, mapsLinePath(line), id); !ok {
				unmatched = append(unmatched, [2]uint64{start, end})
				continue
			}
			s.files[id] = rdev
		}
		held = s.add(held, rdev)
	}
	if len(unmatched) == 0 {
		return held, nil
	}
	smaps, err := s.read(thread, "smaps")
	if err != nil {
		if gone(err) {
			return held, nil
		}
		return nil, err
	}
	if deviceMapped(smaps, unmatched) {
		held = held[:0]
		for rdev := range s.want {
			held = append(held, rdev)
		}
	}
	return held, nil
}

// resolveCached is openat2's RESOLVE_CACHED (Linux 5.12), which x/sys/unix
// does not name: only directory entries in the dcache are walked, else
// EAGAIN. An older kernel refuses the flag (EINVAL): no mapping is matched
// by path there.
const resolveCached = 0x20

// statMatching stats path below root (no symlinks, no way out) and returns
// its rdev when it is a character device, else 0; ok only when it is the
// inode id. The look-up uses cached directory entries only
// (RESOLVE_CACHED; a mapped file pins those of its path), so a hung FUSE or
// NFS mount fails it instead of stalling the scan.
func statMatching(root int, path string, id fileID) (rdev uint64, ok bool) {
	if !strings.HasPrefix(path, "/") {
		return 0, false
	}
	fd, err := unix.Openat2(root, path, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags | resolveCached})
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_INO, &st); err != nil {
		return 0, false
	}
	if unix.Mkdev(st.Dev_major, st.Dev_minor) != id.dev || st.Ino != id.inode {
		return 0, false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return 0, true
	}
	return unix.Mkdev(st.Rdev_major, st.Rdev_minor), true
}

// mapsLinePath is the path of a maps line (the rest after five fields, which
// may hold spaces), "" for a deleted file.
func mapsLinePath(line []byte) string {
	for range 5 {
		line = bytes.TrimLeft(line, " ")
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			return ""
		}
		line = line[i:]
	}
	path := string(bytes.TrimLeft(line, " "))
	if strings.HasSuffix(path, " (deleted)") {
		return ""
	}
	return path
}

// deviceMapped reports whether smaps shows one of ranges mapping device
// memory: VmFlags io (VM_IO), pf (VM_PFNMAP) or mm (VM_MIXEDMAP), which a
// driver's mmap sets and a file's page cache never has.
func deviceMapped(smaps []byte, ranges [][2]uint64) bool {
	in := false
	for line := range bytes.Lines(smaps) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		if flags, ok := bytes.CutPrefix(line, []byte("VmFlags:")); ok {
			if in && slices.ContainsFunc(bytes.Fields(flags), func(f []byte) bool {
				return string(f) == "io" || string(f) == "pf" || string(f) == "mm"
			}) {
				return true
			}
			continue
		}
		if start, end, ok := vmaRange(line); ok {
			in = slices.Contains(ranges, [2]uint64{start, end})
		}
	}
	return false
}

// vmaRange parses the "start-end" that opens a VMA's lines in smaps.
func vmaRange(line []byte) (start, end uint64, ok bool) {
	f, _, _ := bytes.Cut(line, []byte(" "))
	lo, hi, found := bytes.Cut(f, []byte("-"))
	if !found {
		return 0, 0, false
	}
	start, ok1 := parseUint(lo, 16)
	end, ok2 := parseUint(hi, 16)
	return start, end, ok1 && ok2
}
