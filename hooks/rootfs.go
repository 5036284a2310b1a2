package hooks

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openContainerRoot returns an O_PATH handle on the container's root
// filesystem as the container's own mount namespace shows it, where the
// runtime has mounted its /dev. At prestart and createRuntime the container's
// init has not called pivot_root yet, so its root is still the host's and the
// rootfs sits at its host path inside it; from createContainer on, its root
// is the rootfs. Either way the handle must be the very directory the bundle
// names (same device and inode), else the hook refuses.
//
// Only the rootfs path itself is walked here, and it belongs to the runtime,
// not to the container; it is walked with RESOLVE_IN_ROOT so that even a
// symlink on it stays inside that mount namespace's root. Paths inside the
// rootfs are walked later by hotplug.CreateNode, which follows no symlink.
func openContainerRoot(pid int, rootfs string) (*os.File, error) {
	var want unix.Stat_t
	if err := unix.Stat(rootfs, &want); err != nil {
		return nil, fmt.Errorf("failed to stat the container root %s: %w", rootfs, err)
	}
	procRoot := "/proc/" + strconv.Itoa(pid) + "/root"
	rootFd, err := unix.Open(procRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s (has the container exited?): %w", procRoot, err)
	}
	if same(rootFd, &want) {
		return os.NewFile(uintptr(rootFd), procRoot), nil
	}
	defer unix.Close(rootFd)
	fd, err := openat2Retry(rootFd, rootfs, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to find the container root %s inside the container's mount namespace: %w", rootfs, err)
	}
	if !same(fd, &want) {
		unix.Close(fd)
		return nil, fmt.Errorf("failed to find the container root: %s in the container's mount namespace is not the bundle's root filesystem", rootfs)
	}
	return os.NewFile(uintptr(fd), procRoot+rootfs), nil
}

func same(fd int, want *unix.Stat_t) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino
}

func openat2Retry(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, path, how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
}

// fdPath names an open directory so that path-based helpers reach exactly
// it: the /proc/self/fd magic link is bound to the open file, not to a path
// the container could change.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }
