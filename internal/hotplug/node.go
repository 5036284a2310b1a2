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

// CreateNode makes node's character device at node.Path inside the
// container whose root (as seen from the host, e.g. /proc/<pid>/root) is
// root, with permissions mode, creating missing parent directories (0755).
//
// The path is resolved under root without following any symlink, so a
// container cannot point hotgpu at the host. A node that already exists
// with the same device number is left as it is; any other file there is an
// error and is not touched. On error nothing is left behind. created says
// whether the node was made here (false: it was there already).
func CreateNode(root string, node gpu.DeviceNode, mode os.FileMode) (created bool, err error) {
	if err := checkNode(node); err != nil {
		return false, err
	}
	dir, name, err := splitNodePath(node.Path)
	if err != nil {
		return false, err
	}
	h, err := openDir(root, dir, true)
	if err != nil {
		return false, err
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
		return false, checkExisting(parent, name, node)
	}
	if err != nil {
		return false, fmt.Errorf("failed to create %s in %s: %w", node.Path, root, err)
	}
	if err = chmodNode(parent, name, node, mode); err != nil {
		_ = unix.Unlinkat(parent, name, 0)
		return false, fmt.Errorf("failed to set mode of %s in %s: %w", node.Path, root, err)
	}
	return true, nil
}

// CreateNodes creates nodes inside root (see CreateNode) and returns the
// ones it made. On error it removes those again, so nodes the container
// already had are never taken away by a rollback.
func CreateNodes(root string, nodes []gpu.DeviceNode, mode os.FileMode) ([]gpu.DeviceNode, error) {
	var made []gpu.DeviceNode
	for _, n := range nodes {
		created, err := CreateNode(root, n, mode)
		if err != nil {
			RemoveNodes(root, made)
			return nil, fmt.Errorf("failed to create %s in the container: %w", n.Path, err)
		}
		if created {
			made = append(made, n)
		}
	}
	return made, nil
}

// RemoveNodes removes nodes made by CreateNodes, best effort (rollback).
func RemoveNodes(root string, nodes []gpu.DeviceNode) {
	for _, n := range nodes {
		_ = RemoveNode(root, n)
	}
}

// RemoveNode removes node.Path inside root if it is node's character
// device. A missing node is not an error; anything else at that path is,
// and is left alone.
func RemoveNode(root string, node gpu.DeviceNode) error {
	dir, name, err := splitNodePath(node.Path)
	if err != nil {
		return err
	}
	h, err := openDir(root, dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.close()
	parent := h.fd
	if err := checkExisting(parent, name, node); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if err := unix.Unlinkat(parent, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to remove %s in %s: %w", node.Path, root, err)
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
// that is checked to be that node, so a swap in between changes nothing else.
func chmodNode(parent int, name string, node gpu.DeviceNode, mode os.FileMode) error {
	fd, err := unix.Openat(parent, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := matchDevice(&st, node); err != nil {
		return err
	}
	// fchmod does not take O_PATH handles; the /proc magic link does.
	return os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode.Perm())
}
