// Package mountns bind-mounts host files into another process's mount
// namespace (a container's), from a static Go program.
//
// The mount is cloned in the caller's namespace (open_tree), then attached
// from a thread that has joined the container's namespace (move_mount): the
// kernel attaches mounts only inside the caller's own namespace. Go cannot
// move a whole process into another mount namespace (its threads share one
// fs_struct, and setns(CLONE_NEWNS) refuses that), so Enter gives one
// locked thread its own fs_struct (unshare(CLONE_FS)) and joins there; the
// thread is thrown away afterwards. It is not for anything that must run
// in the container's other namespaces or under its credentials.
package mountns

import (
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// Enter runs f on a thread that has joined the mount namespace of pid. f
// must not start goroutines that touch files (they run on other threads,
// in the caller's namespace); processes it starts inherit the namespace.
func Enter(pid int, f func() error) error {
	nsPath := "/proc/" + strconv.Itoa(pid) + "/ns/mnt"
	ns, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("failed to open the mount namespace of pid %d (has it exited?): %w", pid, err)
	}
	defer ns.Close()
	join := func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("failed to leave the shared filesystem context: %w", err)
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("failed to join the mount namespace %s: %w", nsPath, err)
		}
		return f()
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine ends on this thread, and the
		// runtime then ends the thread, namespace and all.
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			done <- join()
			return
		}
		// The main thread is never ended (the runtime parks it for
		// good): joined, it would stay in the namespace, and
		// /proc/<pid>/root would show the container's root from then on.
		// Another goroutine runs on another thread while this one holds
		// the main thread.
		inner := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			inner <- join()
		}()
		done <- <-inner
		runtime.UnlockOSThread()
	}()
	return <-done
}

// Tree is a detached copy of a host file's or directory's mount, ready to
// be attached in another mount namespace.
type Tree struct {
	f   *os.File
	dir bool
}

// Close releases the tree; one never attached goes with it.
func (t *Tree) Close() error { return t.f.Close() }

// attrs are the mount options Clone applies; "bind" is what Clone is, and
// an option not listed here is refused.
var attrs = map[string]uint64{
	"ro": unix.MOUNT_ATTR_RDONLY, "nosuid": unix.MOUNT_ATTR_NOSUID,
	"nodev": unix.MOUNT_ATTR_NODEV, "noexec": unix.MOUNT_ATTR_NOEXEC,
	"bind": 0, "rbind": 0,
}

// Clone makes a detached bind mount of host path with options (as in a
// CDI or OCI mount: ro, nosuid, nodev, noexec, bind), in the caller's
// mount namespace.
func Clone(hostPath string, options []string) (*Tree, error) {
	var set uint64
	for _, o := range options {
		a, ok := attrs[o]
		if !ok {
			return nil, fmt.Errorf("failed to mount %s: option %q is not supported here", hostPath, o)
		}
		set |= a
	}
	var st unix.Stat_t
	if err := unix.Stat(hostPath, &st); err != nil {
		return nil, fmt.Errorf("failed to mount %s: %w", hostPath, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, hostPath, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("failed to clone the mount of %s: %w", hostPath, err)
	}
	t := &Tree{f: os.NewFile(uintptr(fd), hostPath), dir: st.Mode&unix.S_IFMT == unix.S_IFDIR}
	if set != 0 {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: set}); err != nil {
			t.Close()
			return nil, fmt.Errorf("failed to set options %v on the mount of %s: %w", options, hostPath, err)
		}
	}
	return t, nil
}

// ErrNotMountpoint means something other than a file (or a directory, for
// a directory's tree) is already at the path: it is left as it is.
var ErrNotMountpoint = errors.New("is neither a regular file nor a directory")

// Attach mounts each tree at its target inside root (a directory of the
// current mount namespace), as a runtime mounts over what an image has
// there: every component is resolved inside root (a symlink cannot lead
// out of it), missing directories and mount points (an empty file, or a
// directory) are created, and an existing file of the same kind is
// mounted over. A target that already shows the tree's very file (the same
// device and inode: mounted before) is left as it is. All mount points are
// made before anything is mounted; if one cannot be, those made are
// removed and nothing is mounted. It returns how many trees it mounted.
func Attach(root *os.File, trees []*Tree, targets []string) (int, error) {
	if len(trees) != len(targets) {
		return 0, fmt.Errorf("failed to mount: %d trees for %d targets", len(trees), len(targets))
	}
	var points []point
	defer func() {
		for _, p := range points {
			p.close()
		}
	}()
	for i, target := range targets {
		p, err := prepare(root, trees[i], target)
		if err != nil {
			for _, q := range points {
				q.remove()
			}
			return 0, err
		}
		points = append(points, p)
	}
	n := 0
	for i, p := range points {
		if p.fd < 0 {
			continue // already there
		}
		if err := unix.MoveMount(int(trees[i].f.Fd()), "", p.fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return n, fmt.Errorf("failed to mount %s at %s in the container: %w", trees[i].f.Name(), targets[i], err)
		}
		n++
	}
	return n, nil
}

// point is a mount point ready for a tree: an O_PATH handle on it (-1 when
// the tree's file is there already), and, when Attach made it, how to
// remove it.
type point struct {
	dir     *os.File
	name    string
	fd      int
	created bool
}

func (p point) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
	}
	p.dir.Close()
}

// remove takes away a mount point Attach made, before anything is mounted.
func (p point) remove() {
	if !p.created {
		return
	}
	flags := 0
	if p.fd >= 0 {
		var st unix.Stat_t
		if unix.Fstat(p.fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			flags = unix.AT_REMOVEDIR
		}
	}
	_ = unix.Unlinkat(int(p.dir.Fd()), p.name, flags)
}

func prepare(root *os.File, t *Tree, target string) (point, error) {
	if !path.IsAbs(target) || path.Clean(target) != target || target == "/" {
		return point{}, fmt.Errorf("failed to mount at %q: give a clean absolute path inside the container", target)
	}
	dir, err := pathrs.MkdirAllHandle(root, path.Dir(target), 0o755)
	if err != nil {
		return point{}, fmt.Errorf("failed to create %s in the container: %w", path.Dir(target), err)
	}
	p := point{dir: dir, name: path.Base(target), fd: -1}
	if p.fd, p.created, err = mountpoint(dir, p.name, t.dir); err != nil {
		if p.created { // made, then found unusable: an empty file or dir of ours
			flags := 0
			if t.dir {
				flags = unix.AT_REMOVEDIR
			}
			_ = unix.Unlinkat(int(dir.Fd()), p.name, flags)
		}
		dir.Close()
		return point{}, fmt.Errorf("failed to create the mount point %s in the container: %w", target, err)
	}
	if t.same(p.fd) {
		unix.Close(p.fd)
		p.fd = -1
	}
	return p, nil
}

// same reports whether fd is the tree's own file.
func (t *Tree) same(fd int) bool {
	var a, b unix.Stat_t
	return unix.Fstat(fd, &a) == nil && unix.Fstat(int(t.f.Fd()), &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// mountpoint creates name in dir (an empty file, or a directory) unless it
// exists, and returns an O_PATH handle on it that followed no symlink, and
// whether it made it.
func mountpoint(dir *os.File, name string, isDir bool) (fd int, created bool, err error) {
	if isDir {
		err = unix.Mkdirat(int(dir.Fd()), name, 0o755)
	} else {
		err = unix.Mknodat(int(dir.Fd()), name, unix.S_IFREG|0o644, 0)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, false, err
	}
	created = err == nil
	fd, err = unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, created, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, created, err
	}
	want := []uint32{unix.S_IFREG}
	if isDir {
		want = []uint32{unix.S_IFDIR}
	}
	if !slices.Contains(want, st.Mode&unix.S_IFMT) {
		unix.Close(fd)
		return -1, created, fmt.Errorf("the image's %s %w", name, ErrNotMountpoint)
	}
	return fd, created, nil
}

// View is a detached, read-only copy of a process's whole mount tree with a
// small tmpfs of hotgpu's own over its /dev: a view of a container's files
// for a host tool to read (ldconfig -r), whose writes can only land in the
// tmpfs. Neither the container nor the host sees it; it goes with Close.
type View struct {
	// Root is the copy's root directory, for a child process as
	// /proc/self/fd/N.
	Root *os.File
	// Scratch is the tmpfs's root directory; the copy shows it at /dev.
	Scratch *os.File
}

// Close releases the view and its tmpfs (unless a clone of a file in it
// was attached somewhere: that keeps the tmpfs alive).
func (v *View) Close() error { return errors.Join(v.Root.Close(), v.Scratch.Close()) }

// ScratchView makes a View of pid's mount namespace. The copy is made on a
// thread that joined it and then unshared a private namespace of its own,
// so the container's mounts are never changed; /dev in it must be a
// directory, not a symlink. The tmpfs is made here, in the caller's
// namespace, and only a clone of it goes into the copy: Scratch stays a
// mount that files can be cloned from (CloneFile) once the copy is gone.
func ScratchView(pid int) (*View, error) {
	scratch, err := newTmpfs()
	if err != nil {
		return nil, err
	}
	var root *os.File
	err = Enter(pid, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("failed to make a private copy of the container's mounts: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("failed to make the copy of the container's mounts private: %w", err)
		}
		ro := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, &ro); err != nil {
			return fmt.Errorf("failed to make the copy of the container's mounts read-only: %w", err)
		}
		dev, err := unix.Openat2(unix.AT_FDCWD, "/dev", &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return fmt.Errorf("failed to open the container's /dev (a directory, not a symlink): %w", err)
		}
		defer unix.Close(dev)
		clone, err := unix.OpenTree(int(scratch.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if err != nil {
			return fmt.Errorf("failed to clone the scratch tmpfs: %w", err)
		}
		defer unix.Close(clone)
		if err := unix.MoveMount(clone, "", dev, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return fmt.Errorf("failed to mount a scratch tmpfs in the copy of the container's mounts: %w", err)
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return fmt.Errorf("failed to copy the container's mounts: %w", err)
		}
		root = os.NewFile(uintptr(fd), "container-view")
		return nil
	})
	if err != nil {
		scratch.Close()
		return nil, err
	}
	return &View{Root: root, Scratch: scratch}, nil
}

// newTmpfs makes a detached tmpfs (nosuid, nodev, noexec, 16 MiB, 0700).
func newTmpfs() (*os.File, error) {
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("failed to make a scratch tmpfs: %w", err)
	}
	defer unix.Close(fs)
	for k, v := range map[string]string{"source": "hotgpu", "size": "16m", "mode": "0700"} {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return nil, fmt.Errorf("failed to make a scratch tmpfs (%s=%s): %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return nil, fmt.Errorf("failed to make a scratch tmpfs: %w", err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return nil, fmt.Errorf("failed to mount a scratch tmpfs: %w", err)
	}
	return os.NewFile(uintptr(m), "scratch"), nil
}

// CloneFile makes a detached read-only bind mount (nosuid, nodev, noexec)
// of the regular file name in dir, to Attach elsewhere.
func CloneFile(dir *os.File, name string) (*Tree, error) {
	fd, err := unix.OpenTree(int(dir.Fd()), name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return nil, fmt.Errorf("failed to clone the mount of %s: %w", name, err)
	}
	t := &Tree{f: os.NewFile(uintptr(fd), name)}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Close()
		return nil, fmt.Errorf("failed to clone %s: not a regular file (%v)", name, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		t.Close()
		return nil, fmt.Errorf("failed to make the mount of %s read-only: %w", name, err)
	}
	return t, nil
}

// Stat returns the device and inode of the tree's file.
func (t *Tree) Stat() (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(t.f.Fd()), &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// FileID is a file by filesystem and inode; the zero FileID is none.
type FileID struct {
	Dev, Ino uint64
}

// Over mounts t at target inside root, as Attach does, and returns the
// empty file it made there to mount on when target did not exist (zero
// when it did). A target that shows t's file already is left as it is
// (mounted false).
func Over(root *os.File, t *Tree, target string) (made FileID, mounted bool, err error) {
	p, err := prepare(root, t, target)
	if err != nil {
		return FileID{}, false, err
	}
	defer p.close()
	if p.fd < 0 {
		return FileID{}, false, nil
	}
	if p.created {
		var st unix.Stat_t
		if err := unix.Fstat(p.fd, &st); err != nil {
			p.remove()
			return FileID{}, false, fmt.Errorf("failed to stat the mount point %s: %w", target, err)
		}
		made = FileID{Dev: st.Dev, Ino: st.Ino}
	}
	if err := unix.MoveMount(int(t.f.Fd()), "", p.fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		p.remove()
		return FileID{}, false, fmt.Errorf("failed to mount %s at %s in the container: %w", t.f.Name(), target, err)
	}
	return made, true, nil
}

// Undo takes away, in the mount namespace of pid and under its root (as
// Over was given it), what Over put at target and nothing else: while what
// target shows is one of ours (a file in ours, by device and inode), a
// mount whose root it is is unmounted and an empty regular file is
// removed. Each is acted on through the handle it was checked by, so
// nothing put there in between is touched. Anything else found there (the
// container's own file, its own mount, a symlink) is left as it is and
// reported as left.
func Undo(pid int, target string, ours ...FileID) (left bool, err error) {
	if !path.IsAbs(target) || path.Clean(target) != target || target == "/" {
		return false, fmt.Errorf("invalid path %q", target)
	}
	root, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("failed to open the root of pid %d (has it exited?): %w", pid, err)
	}
	defer root.Close()
	// the host's /proc: the mount is unmounted through its handle there
	proc, err := os.OpenFile("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer proc.Close()
	err = Enter(pid, func() error {
		for i := range len(ours) + 1 {
			done, err := undoOne(root, proc, target, ours)
			if errors.Is(err, errNotOurs) {
				left = i == 0 // after an unmount: the container's own file, as before
				return nil
			}
			if err != nil || done {
				return err
			}
		}
		return nil
	})
	return left, err
}

// errNotOurs says what is at the path is not what Over put there.
var errNotOurs = errors.New("not hotgpu's")

// undoOne undoes the top of what target shows under root, if it is ours:
// done is true when there is nothing more to undo.
func undoOne(root, proc *os.File, target string, ours []FileID) (done bool, err error) {
	rel := target[1:]
	fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS})
	if errors.Is(err, unix.ENOENT) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to open %s in the container: %w", target, err)
	}
	defer unix.Close(fd)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, err
	}
	id := FileID{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}
	switch {
	case !slices.Contains(ours, id):
		return true, errNotOurs
	case stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0:
		if err := unix.Fchdir(int(proc.Fd())); err != nil {
			return false, err
		}
		if err := unix.Unmount("thread-self/fd/"+strconv.Itoa(fd), unix.MNT_DETACH); err != nil {
			return false, fmt.Errorf("failed to unmount %s in the container: %w", target, err)
		}
		return false, nil
	case stx.Mode&unix.S_IFMT == unix.S_IFREG && stx.Size == 0:
		dir, err := unix.Openat2(int(root.Fd()), path.Dir(rel), &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return false, fmt.Errorf("failed to open %s in the container: %w", path.Dir(target), err)
		}
		defer unix.Close(dir)
		if !sameFile(dir, path.Base(rel), id) {
			return true, errNotOurs
		}
		if err := unix.Unlinkat(dir, path.Base(rel), 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return false, fmt.Errorf("failed to remove %s from the container: %w", target, err)
		}
		return true, nil
	default:
		return true, errNotOurs
	}
}

// sameFile reports whether name in dir is the file id, not following a
// symlink.
func sameFile(dir int, name string, id FileID) bool {
	var st unix.Stat_t
	return unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == id.Dev && st.Ino == id.Ino
}
