package hotplug

import (
	"errors"
	"fmt"
	"os"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrSharedDir is returned when the directory a node would go in is not the
// container's own but shared with the host: the host's /dev itself, or a
// filesystem the host has mounted too (`docker run -v /dev:/dev`, a pod
// with a hostPath /dev). A node there is the host's, and unlinking it would
// take the GPU from the whole node: hotgpu neither creates nor removes nodes
// in such a directory.
var ErrSharedDir = errors.New("directory shared with the host")

// hostView is what tells a container's own directories from the host's.
type hostView struct {
	rootDev uint64      // filesystem of the container's root
	hostDev [][2]uint64 // device and inode of the host's /dev
	mounted map[uint64]bool
}

// newHostView looks at the container whose root is root and at the host's
// mounts: those of hotgpu's own mount namespace and, when it is another, of
// pid 1's (hotgpud runs in the host's PID namespace, maybe not in its mount
// namespace).
func newHostView(root string) (*hostView, error) {
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return nil, fmt.Errorf("failed to stat container root %s (has the container exited?): %w", root, err)
	}
	v := &hostView{rootDev: st.Dev, mounted: map[uint64]bool{}}
	for _, dev := range []string{"/dev", "/proc/1/root/dev"} {
		if unix.Stat(dev, &st) == nil {
			v.hostDev = append(v.hostDev, [2]uint64{st.Dev, st.Ino})
		}
	}
	if err := v.addMounts("/proc/self/mountinfo"); err != nil {
		return nil, err
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if host, err := os.Readlink("/proc/1/ns/mnt"); err == nil && host != self {
		if err := v.addMounts("/proc/1/mountinfo"); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// addMounts adds the filesystems of the mounts a mountinfo file lists.
func (v *hostView) addMounts(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to read the host's mounts: %w", err)
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return fmt.Errorf("failed to read the host's mounts from %s: %w", path, err)
	}
	for _, m := range mounts {
		v.mounted[unix.Mkdev(uint32(m.Major), uint32(m.Minor))] = true
	}
	return nil
}

// check returns ErrSharedDir when the directory fd (at path at inside the
// container) is the host's /dev, or lies on a filesystem other than the
// container root's that the host has mounted. The container's own /dev (a
// tmpfs its runtime mounted in the container's mount namespace) is neither.
func (v *hostView) check(fd int, at string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("failed to stat %s in the container: %w", at, err)
	}
	for _, d := range v.hostDev {
		if st.Dev == d[0] && st.Ino == d[1] {
			return fmt.Errorf("%w: %s in the container is the host's /dev", ErrSharedDir, at)
		}
	}
	if st.Dev != v.rootDev && v.mounted[st.Dev] {
		return fmt.Errorf("%w: %s in the container is a mount of a filesystem the host has mounted too (a bind mount from the host)", ErrSharedDir, at)
	}
	return nil
}
