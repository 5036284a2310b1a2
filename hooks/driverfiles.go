package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/mountns"
)

// ErrSharedRootfs means the container's root propagates mounts back to the
// host, so driver files mounted into it would appear on the host too.
var ErrSharedRootfs = errors.New("the container's root filesystem propagation is shared")

// mountDriver gives a container being created (prestart or createRuntime:
// its mount namespace exists, pivot_root has not happened) the driver's
// user-space as the CDI spec's createContainer edits do: e's files mounted
// at their paths inside the rootfs, the SONAME links beside them and the
// linker cache rebuilt. An OCI hook cannot add mounts to the spec, so it
// mounts them itself: each file is cloned here, in the runtime's namespace
// (open_tree), and attached from a thread that joined the container's
// (move_mount). A read-only root works: runc makes it read-only after the
// hooks. On error the container's creation fails, taking its namespace and
// whatever was mounted there with it.
func mountDriver(ctx context.Context, c *container, pid int, e *driver.Edits) error {
	if e == nil || len(e.Mounts) == 0 {
		return nil
	}
	if c.spec.Linux != nil && slices.Contains([]string{"shared", "rshared"}, c.spec.Linux.RootfsPropagation) {
		return fmt.Errorf("failed to mount the driver's files: %w (%q): use slave or private propagation, or give the GPUs through CDI",
			ErrSharedRootfs, c.spec.Linux.RootfsPropagation)
	}
	trees := make([]*mountns.Tree, 0, len(e.Mounts))
	defer func() {
		for _, t := range trees {
			t.Close()
		}
	}()
	for _, m := range e.Mounts {
		t, err := mountns.Clone(m.HostPath, m.Options)
		if err != nil {
			return err
		}
		trees = append(trees, t)
	}
	var want unix.Stat_t
	if err := unix.Stat(c.rootfs, &want); err != nil {
		return fmt.Errorf("failed to stat the container root %s: %w", c.rootfs, err)
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultLDCacheTimeout)
	defer cancel()
	return mountns.Enter(pid, func() error {
		root, err := os.OpenFile(c.rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("failed to open the container root %s in its mount namespace: %w", c.rootfs, err)
		}
		defer root.Close()
		if !same(int(root.Fd()), &want) {
			return fmt.Errorf("failed to find the container root: %s in the container's mount namespace is not the bundle's root filesystem", c.rootfs)
		}
		targets := make([]string, len(e.Mounts))
		for i, m := range e.Mounts {
			targets[i] = m.ContainerPath
		}
		if _, err := mountns.Attach(root, trees, targets); err != nil {
			return err
		}
		return finishDriver(ctx, root, c.rootfs, e)
	})
}

// finishDriver makes the links and the linker cache, as the CDI spec's
// create-symlinks and update-ldcache hooks do.
func finishDriver(ctx context.Context, root *os.File, rootPath string, e *driver.Edits) error {
	for _, l := range e.Symlinks {
		if err := createLink(root, symlink{target: l.Target, link: l.Link}); err != nil {
			return err
		}
	}
	if len(e.LibraryDirs) == 0 {
		return nil
	}
	if err := validateFolders(e.LibraryDirs); err != nil {
		return err
	}
	if err := writeConf(rootPath, e.LibraryDirs); err != nil {
		return err
	}
	if ldconfig := findLDConfig(); ldconfig != "" {
		return runLDConfig(ctx, ldconfig, rootPath, e.LibraryDirs)
	}
	return nil
}

// linkTargets checks e's links as create-symlinks checks its --link flags:
// hotgpud's answer is trusted no more than a hook's arguments.
func linkTargets(e *driver.Edits) error {
	for _, l := range e.Symlinks {
		if _, err := parseLinks([]string{l.String()}); err != nil {
			return err
		}
		if path.Dir(l.Target) != "." {
			return fmt.Errorf("invalid driver link %s: the target must be a name in the link's directory", l)
		}
	}
	return nil
}

// GiveRunning gives a running container, the one process pid belongs to,
// the driver's user-space that a container created with the GPU gets:
// e's files mounted at their paths in its mount namespace (cloned here,
// attached from a thread that joined it: the container needs no tool of
// its own), the SONAME links, and a linker cache that lists them. The
// container's own /etc/ld.so.cache is not rewritten under its running
// programs: a new cache, built by the host's ldconfig from a read-only copy
// of the container's mounts, is mounted over it (mountLiveCache); the
// returned CacheMount says what to unmount, and remove, to restore the
// container's view. Files it shows already (the same file: given at
// creation, or by an earlier attach) are left as they are; when all are
// there it changes nothing. A root it cannot create the mount points in (a
// read-only root) gets nothing and an error that says so. It returns how
// many files it mounted.
func GiveRunning(ctx context.Context, pid int, e *driver.Edits) (int, *CacheMount, error) {
	if e == nil || len(e.Mounts) == 0 {
		return 0, nil, nil
	}
	if err := linkTargets(e); err != nil {
		return 0, nil, err
	}
	rootPath := "/proc/" + strconv.Itoa(pid) + "/root"
	root, err := os.OpenFile(rootPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("failed to open the root of pid %d (has the container exited?): %w", pid, err)
	}
	defer root.Close()
	trees := make([]*mountns.Tree, 0, len(e.Mounts))
	defer func() {
		for _, t := range trees {
			t.Close()
		}
	}()
	targets := make([]string, 0, len(e.Mounts))
	for _, m := range e.Mounts {
		t, err := mountns.Clone(m.HostPath, m.Options)
		if err != nil {
			return 0, nil, err
		}
		trees, targets = append(trees, t), append(targets, m.ContainerPath)
	}
	var n int
	if err := mountns.Enter(pid, func() (err error) {
		n, err = mountns.Attach(root, trees, targets)
		return err
	}); err != nil || n == 0 {
		return n, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultLDCacheTimeout)
	defer cancel()
	for _, l := range e.Symlinks {
		if err := createLink(root, symlink{target: l.Target, link: l.Link}); err != nil {
			return n, nil, err
		}
	}
	if len(e.LibraryDirs) == 0 {
		return n, nil, nil
	}
	if err := validateFolders(e.LibraryDirs); err != nil {
		return n, nil, err
	}
	if err := writeConf(rootPath, e.LibraryDirs); err != nil {
		return n, nil, err
	}
	cm, err := mountLiveCache(ctx, pid, root, e.LibraryDirs)
	return n, cm, err
}

// ErrNoLDConfig means the files were mounted and linked but no host
// ldconfig was found to rebuild the container's linker cache.
var ErrNoLDConfig = errors.New("no ldconfig to rebuild the container's linker cache")
