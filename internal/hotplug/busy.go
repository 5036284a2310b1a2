package hotplug

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

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
// mid-scan are skipped, and so are kernel threads and zombies (no address
// space: nothing of theirs can be a user's open GPU); a process whose main
// thread exited while other threads run on is scanned through one of those
// (leaderless). A process even root may not inspect (EACCES: e.g.
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
	pids, err := processes(skip)
	if err != nil {
		return nil, nil, err
	}
	found := scanAll(want, pids)
	for i, f := range found { // in pid order, whatever the workers' order
		switch {
		case errors.Is(f.err, unix.EACCES):
			unreadable = append(unreadable, pids[i])
		case f.err != nil:
			return nil, nil, f.err
		}
		for _, rdev := range f.devs {
			n := want[rdev]
			held[n] = append(held[n], pids[i])
		}
	}
	return held, unreadable, nil
}

// processes lists the pids of /proc, in order, but those in skip.
func processes(skip []int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("failed to list processes: %w", err)
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && !slices.Contains(skip, pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// found is what the scan found for one pid.
type found struct {
	devs []uint64
	err  error
}

// maxScanners bounds the goroutines of one scan: the work is system calls
// into procfs, which scale with the CPUs, not beyond.
const maxScanners = 4

// scanAll scans pids on up to GOMAXPROCS (at most maxScanners) goroutines,
// each taking the next pid in turn, and returns what it found for each,
// indexed as pids. A scan is node-wide, so its time is paid by every
// detach; on an idle node the CPUs are free to share it.
func scanAll(want map[uint64]gpu.DeviceNode, pids []int) []found {
	out := make([]found, len(pids))
	workers := min(runtime.GOMAXPROCS(0), maxScanners, len(pids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := scans.Get().(*scan)
			defer s.done()
			s.want = want
			for i := int(next.Add(1) - 1); i < len(pids); i = int(next.Add(1) - 1) {
				out[i].devs, out[i].err = s.process(pids[i])
			}
		}()
	}
	wg.Wait()
	return out
}

// fileID names an inode the way /proc/PID/maps does: filesystem
// (major:minor of its device) and inode.
type fileID struct {
	dev, inode uint64
}

// scan is one goroutine's share of a walk of /proc. files caches what each
// mapped inode is (its rdev when it is a character device, else 0): every
// process maps the same libraries, so each is stat'ed once per walk, not
// once per process.
type scan struct {
	want  map[uint64]gpu.DeviceNode
	files map[fileID]uint64
	buf   []byte     // the maps text of one process
	dents [8192]byte // one getdents of an fd directory
}

// scans keeps scanners between scans: every detach scans the node, and the
// buffers of each goroutine's scan (the maps text, an fd directory's
// entries) were most of what a scan allocated.
var scans = sync.Pool{New: func() any { return &scan{files: map[fileID]uint64{}} }}

// maxKeptBuf is the largest maps buffer a pooled scan keeps: a process with
// a huge maps file grows it for its own scan only.
const maxKeptBuf = 1 << 20

// done forgets what this scan learnt (inodes are only compared within one
// scan) and returns s to the pool.
func (s *scan) done() {
	s.want = nil
	clear(s.files)
	if cap(s.buf) > maxKeptBuf {
		s.buf = nil
	}
	scans.Put(s)
}

// process returns the device numbers among s.want that pid holds. Every
// look-up is relative to one handle on the process's /proc directory: it
// stays the same process (a new one under the pid is not mixed in), and the
// kernel walks one path component per stat, not four.
func (s *scan) process(pid int) ([]uint64, error) {
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to open /proc/%d: %w", pid, err)
	}
	defer unix.Close(dir)
	if noMemory(dir) {
		held, err := s.leaderless(dir)
		if err != nil {
			return nil, fmt.Errorf("failed to read the threads of pid %d: %w", pid, err)
		}
		return held, nil
	}
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

// fds stats every entry of the process's fd directory.
func (s *scan) fds(proc int) ([]uint64, error) {
	dir, err := unix.Openat(proc, "fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	defer unix.Close(dir)
	var held []uint64
	err = dirents(dir, s.dents[:], func(name string) (bool, error) {
		rdev, _, err := charDev(dir, name)
		held = s.add(held, rdev)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return held, nil
}

// add adds rdev to held when it is one of s.want and not there yet.
func (s *scan) add(held []uint64, rdev uint64) []uint64 {
	if _, ok := s.want[rdev]; ok && rdev != 0 && !slices.Contains(held, rdev) {
		held = append(held, rdev)
	}
	return held
}

// dirents calls fn with the name of each entry of the directory fd but .
// and .., read by getdents into buf, until fn says stop or fails. A
// directory that went away (its process exited) ends the walk without an
// error.
func dirents(fd int, buf []byte, fn func(name string) (stop bool, err error)) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		if n == 0 {
			return nil
		}
		for b := buf[:n]; len(b) > 0; {
			name, rest, ok := direntName(b)
			if !ok {
				return errors.New("malformed directory entry")
			}
			b = rest
			if name == "." || name == ".." {
				continue
			}
			if stop, err := fn(name); stop || err != nil {
				return err
			}
		}
	}
}

// direntName returns the name of the first linux_dirent64 in buf and the
// entries after it.
func direntName(buf []byte) (name string, rest []byte, ok bool) {
	const nameOff = 19 // d_ino 8, d_off 8, d_reclen 2, d_type 1
	if len(buf) < nameOff {
		return "", nil, false
	}
	reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
	if reclen < nameOff || reclen > len(buf) {
		return "", nil, false
	}
	b := buf[nameOff:reclen]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), buf[reclen:], true
}

// maps reads /proc/PID/maps and stats the file behind each file-backed
// mapping through map_files. The dev column of maps is the filesystem a
// node lives on, not the device it stands for, hence the stat.
func (s *scan) maps(proc int) ([]uint64, error) {
	data, err := s.read(proc, "maps")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	files := -1 // map_files, opened at the first inode not seen yet
	defer func() {
		if files >= 0 {
			unix.Close(files)
		}
	}()
	var held []uint64
	for line := range bytes.Lines(data) {
		start, end, id, ok := parseMapsLine(bytes.TrimSuffix(line, []byte("\n")))
		if !ok {
			continue
		}
		rdev, seen := s.files[id]
		if !seen {
			if files < 0 {
				if files, err = unix.Openat(proc, "map_files", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
					if gone(err) {
						return held, nil
					}
					return nil, err
				}
			}
			var there bool
			rng := strconv.FormatUint(start, 16) + "-" + strconv.FormatUint(end, 16)
			if rdev, there, err = charDev(files, rng); err != nil {
				return nil, err
			}
			if there { // an unmapped range says nothing about the inode
				s.files[id] = rdev
			}
		}
		held = s.add(held, rdev)
	}
	return held, nil
}

// read returns the whole of the file name in dir, in s.buf.
func (s *scan) read(dir int, name string) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if s.buf == nil {
		s.buf = make([]byte, 0, 64<<10)
	}
	s.buf = s.buf[:0]
	for {
		if len(s.buf) == cap(s.buf) {
			s.buf = slices.Grow(s.buf, cap(s.buf))
		}
		n, err := unix.Read(fd, s.buf[len(s.buf):cap(s.buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return s.buf, nil
		}
		s.buf = s.buf[:len(s.buf)+n]
	}
}

// parseMapsLine returns the address range (map_files names it "start-end"
// in unpadded hex) and the file of a file-backed line of /proc/PID/maps:
// "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon".
// It allocates nothing: a busy node's maps run to many thousand lines.
func parseMapsLine(line []byte) (start, end uint64, id fileID, ok bool) {
	var f [5][]byte
	for i := range f {
		line = bytes.TrimLeft(line, " ")
		j := bytes.IndexByte(line, ' ')
		if j < 0 {
			if i < 4 {
				return 0, 0, fileID{}, false
			}
			j = len(line)
		}
		f[i], line = line[:j], line[j:]
	}
	ino, ok1 := parseUint(f[4], 10)
	if !ok1 || ino == 0 {
		return 0, 0, fileID{}, false // anonymous, heap, stack, vdso
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	major, minor, found2 := bytes.Cut(f[3], []byte(":"))
	start, ok1 = parseUint(lo, 16)
	end, ok2 := parseUint(hi, 16)
	maj, ok3 := parseUint(major, 16)
	mnr, ok4 := parseUint(minor, 16)
	if !found || !found2 || !ok1 || !ok2 || !ok3 || !ok4 || maj > 0xffffffff || mnr > 0xffffffff {
		return 0, 0, fileID{}, false
	}
	return start, end, fileID{dev: unix.Mkdev(uint32(maj), uint32(mnr)), inode: ino}, true
}

// parseUint parses a non-empty unsigned number in base 10 or 16 without
// allocating; ok is false for anything else or on overflow.
func parseUint(b []byte, base uint64) (n uint64, ok bool) {
	if len(b) == 0 || (base == 16 && len(b) > 16) || (base == 10 && len(b) > 19) {
		return 0, false
	}
	for _, c := range b {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		n = n*base + d
	}
	return n, true
}

// charDev returns the device number of the file that the /proc magic link
// name in dir stands for when it is a character device, else 0; there is
// false when the fd or mapping went away.
func charDev(dir int, name string) (rdev uint64, there bool, err error) {
	var stx unix.Statx_t
	err = unix.Statx(dir, name, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx)
	if err != nil {
		if gone(err) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("failed to stat %s: %w", name, err)
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFCHR {
		return 0, true, nil
	}
	return unix.Mkdev(stx.Rdev_major, stx.Rdev_minor), true, nil
}

// gone reports errors of a process, fd or mapping that went away mid-scan.
// noMemory reports whether the process of proc has no address space: a
// kernel thread, or a zombie whose files and mappings are gone. Neither can
// hold a GPU open for a user (an fd comes from open(2) or SCM_RIGHTS, both
// a process's), and most entries of /proc are kernel threads, so one
// readlink of exe (ENOENT without an mm) spares their fd and maps reads.
func noMemory(proc int) bool {
	var buf [1]byte
	_, err := unix.Readlinkat(proc, "exe", buf[:])
	return errors.Is(err, unix.ENOENT)
}

func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
