package hotplug

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// ErrUnsafePath is returned when a node's path inside a container crosses a
// symlink or is not what hotgpu expects there. The container controls those
// paths; hotgpu never follows them.
var ErrUnsafePath = errors.New("unsafe path in container")

// ErrNotMade is returned when the file at a node's path is not the node
// hotgpu made there (another inode, another filesystem: the container
// replaced it, or the path now leads to a mount from the host). hotgpu
// leaves it alone.
var ErrNotMade = errors.New("not the node hotgpu created")

// Made is a device node hotgpu created inside a container: its path there,
// its inode and filesystem (st_dev), and its device number. It is the only
// proof RemoveMade accepts.
type Made struct {
	Path string
	Ino  uint64
	Dev  uint64
	Rdev uint64
}

// CreateNode makes node's character device at node.Path inside the
// container whose root (as seen from the host, e.g. /proc/<pid>/root) is
// root, with permissions mode, creating missing parent directories (0755).
//
// The path is resolved under root without following any symlink, so a
// container cannot point hotgpu at the host. A node that already exists
// with the same device number is left as it is (made is nil: it is not
// hotgpu's); any other file there is an error and is not touched. Nothing is
// made in a directory shared with the host (ErrSharedDir). On error nothing
// is left behind.
func CreateNode(root string, node gpu.DeviceNode, mode os.FileMode) (*Made, error) {
	own, err := newHostView(root)
	if err != nil {
		return nil, err
	}
	return createNode(root, own, node, mode)
}

func createNode(root string, own *hostView, node gpu.DeviceNode, mode os.FileMode) (made *Made, err error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	dir, name, err := splitNodePath(node.Path)
	if err != nil {
		return nil, err
	}
	h, err := openDir(root, dir, own)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.undo()
		} else {
			h.close()
		}
	}()
	parent := h.fd
	dev := int(unix.Mkdev(uint32(node.Major), uint32(node.Minor)))
	err = unix.Mknodat(parent, name, unix.S_IFCHR|uint32(mode.Perm()), dev)
	if errors.Is(err, unix.EEXIST) {
		return nil, checkExisting(parent, name, node)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to create %s in %s: %w", node.Path, root, err)
	}
	st, err := chmodNode(parent, name, node, mode)
	if err != nil {
		_ = unix.Unlinkat(parent, name, 0)
		return nil, fmt.Errorf("failed to set mode of %s in %s: %w", node.Path, root, err)
	}
	return &Made{Path: node.Path, Ino: st.Ino, Dev: st.Dev, Rdev: st.Rdev}, nil
}

// CreateNodes creates nodes inside root (see CreateNode) and returns the
// ones it made. On error it removes those again, so nodes the container
// already had are never taken away by a rollback. In a directory shared
// with the host it makes nothing and returns ErrSharedDir.
func CreateNodes(root string, nodes []gpu.DeviceNode, mode os.FileMode) ([]Made, error) {
	own, err := newHostView(root)
	if err != nil {
		return nil, err
	}
	var made []Made
	for _, n := range nodes {
		m, err := createNode(root, own, n, mode)
		if err != nil {
			RemoveNodes(root, made)
			return nil, fmt.Errorf("failed to create %s in the container: %w", n.Path, err)
		}
		if m != nil {
			made = append(made, *m)
		}
	}
	return made, nil
}

// RemoveNodes removes nodes made by CreateNodes, best effort (rollback).
func RemoveNodes(root string, made []Made) {
	for _, m := range made {
		_ = RemoveMade(root, m)
	}
}

// RemoveMade removes the node hotgpu made at m.Path inside root, only if the
// file there is still that node: the same inode on the same filesystem,
// the same device number. A missing node is not an error; anything else at
// that path (ErrNotMade), or a symlink on the way (ErrUnsafePath), is left
// alone. Nothing else is ever removed.
func RemoveMade(root string, m Made) error {
	dir, name, err := splitNodePath(m.Path)
	if err != nil {
		return err
	}
	h, err := openDir(root, dir, nil)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.close()
	var st unix.Stat_t
	if err := unix.Fstatat(h.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("failed to stat %s in %s: %w", m.Path, root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Ino != m.Ino || st.Dev != m.Dev || st.Rdev != m.Rdev {
		return fmt.Errorf("%w: %s is inode %d on device %d, hotgpu made inode %d on device %d; left as it is",
			ErrNotMade, m.Path, st.Ino, st.Dev, m.Ino, m.Dev)
	}
	if err := unix.Unlinkat(h.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to remove %s in %s: %w", m.Path, root, err)
	}
	return nil
}

// splitNodePath splits an absolute node path into its directory and name.
func splitNodePath(p string) (dir, name string, err error) {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" || strings.Contains(p, "/../") {
		return "", "", fmt.Errorf("invalid device path %q: want a clean absolute path such as /dev/nvidia0", p)
	}
	dir, name = path.Split(p)
	return dir, name, nil
}

// checkExisting reports nil if name in parent is node's character device,
// without following a symlink there.
func checkExisting(parent int, name string, node gpu.DeviceNode) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("failed to stat %s: %w", node.Path, err)
	}
	return matchDevice(&st, node)
}

func matchDevice(st *unix.Stat_t, node gpu.DeviceNode) error {
	want := unix.Mkdev(uint32(node.Major), uint32(node.Minor))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != want {
		return fmt.Errorf("%w: %s exists and is not character device %d:%d; remove it from the container first",
			ErrUnsafePath, node.Path, node.Major, node.Minor)
	}
	return nil
}

// chmodNode sets the mode of the node just made, through an O_PATH handle
// that is checked to be that node, so a swap in between changes nothing
// else, and returns what that handle is (what RemoveMade later asks for).
func chmodNode(parent int, name string, node gpu.DeviceNode, mode os.FileMode) (*unix.Stat_t, error) {
	fd, err := unix.Openat(parent, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if err := matchDevice(&st, node); err != nil {
		return nil, err
	}
	// fchmod does not take O_PATH handles; the /proc magic link does.
	return &st, os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode.Perm())
}
