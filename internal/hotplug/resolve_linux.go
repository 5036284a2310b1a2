package hotplug

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// resolveFlags make openat2 stay below the directory it starts from and
// refuse every symlink: hotgpu only walks runtime-made directories like
// /dev, where a symlink is a container trying to redirect it.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// dirHandle is an O_PATH handle of a directory inside a container, and the
// directories made on the way to it, with handles of their parents so they
// can be removed again.
type dirHandle struct {
	fd      int
	created []madeDir
}

type madeDir struct {
	parent int
	name   string
}

// openDir opens dir (absolute, clean) below root one component at a time.
// With own set, it creates missing ones (0755), each only in a directory
// that own says is the container's, and checks the last one too: nothing is
// made in a directory shared with the host (ErrSharedDir).
func openDir(root, dir string, own *hostView) (*dirHandle, error) {
	cur, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open container root %s (has the container exited?): %w", root, err)
	}
	h := &dirHandle{fd: -1}
	at := "/"
	for _, name := range strings.Split(strings.Trim(dir, "/"), "/") {
		if name == "" {
			continue
		}
		parent := at
		at += name + "/"
		next, err := openat2Dir(cur, name)
		if errors.Is(err, unix.ENOENT) && own != nil {
			next, err = h.mkdir(own, cur, parent, name)
		}
		if n := len(h.created); n == 0 || h.created[n-1].parent != cur {
			unix.Close(cur) // not kept for undo
		}
		if errors.Is(err, ErrSharedDir) {
			h.undo()
			return nil, err
		}
		if err != nil {
			h.undo()
			return nil, resolveError(root, at, err)
		}
		cur = next
	}
	h.fd = cur
	if own != nil {
		if err := own.check(cur, dir); err != nil {
			h.undo()
			return nil, err
		}
	}
	return h, nil
}

// mkdir makes name in parent, a directory own must accept, and opens it.
func (h *dirHandle) mkdir(own *hostView, parent int, at, name string) (int, error) {
	if err := own.check(parent, at); err != nil {
		return -1, err
	}
	err := unix.Mkdirat(parent, name, 0o755)
	if err == nil {
		h.created = append(h.created, madeDir{parent: parent, name: name})
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return openat2Dir(parent, name)
}

// undo removes the directories openDir made and closes every handle.
func (h *dirHandle) undo() {
	for i := len(h.created) - 1; i >= 0; i-- {
		_ = unix.Unlinkat(h.created[i].parent, h.created[i].name, unix.AT_REMOVEDIR)
	}
	h.close()
}

// close closes every handle, keeping what was made.
func (h *dirHandle) close() {
	for _, c := range h.created {
		unix.Close(c.parent)
	}
	h.created = nil
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

func openat2Dir(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: resolveFlags,
		})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // a concurrent rename elsewhere; openat2 asks to retry
		}
		return fd, err
	}
}

func resolveError(root, at string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w: %s in %s is a symlink or not a directory; hotgpu will not follow it", ErrUnsafePath, at, root)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("failed to resolve %s in %s: openat2 needs Linux 5.6 or later: %w", at, root, err)
	}
	return fmt.Errorf("failed to resolve %s in %s: %w", at, root, err)
}
