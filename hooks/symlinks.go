package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// Symlinks is one create-symlinks run: the driver libraries' SONAME and
// development links (libcuda.so.1 -> libcuda.so.580.95.05, libcuda.so ->
// libcuda.so.1), made in the container beside the mounted files.
type Symlinks struct {
	// Links are "TARGET::LINK": LINK is an absolute path inside the
	// container, TARGET what the link says (a name in the same directory).
	Links []string
}

// symlink is one parsed link.
type symlink struct{ target, link string }

// Run reads the OCI state from stdin and creates each link inside the
// container's root. The root is the bundle's rootfs path, as for
// update-ldcache: runc runs createContainer hooks in the container's mount
// namespace before pivot_root, where that path is the container's root, and
// the state's pid is the one in the container's pid namespace (1), so the
// /proc/<pid>/root route of openContainerRoot does not apply. Every directory is resolved inside the root (a symlink
// there cannot send the link to the host) and the link is created with
// symlinkat in the directory it resolved to. A link already there with the
// same target is left as it is (a restarted container); anything else
// already at that path belongs to the image and is left too: hotgpu never
// replaces a file it did not create.
func (s Symlinks) Run(_ context.Context, stdin io.Reader) error {
	links, err := parseLinks(s.Links)
	if err != nil {
		return err
	}
	root, err := containerRoot(stdin)
	if err != nil {
		return err
	}
	rootDir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open the container root %s: %w", root, err)
	}
	defer rootDir.Close()
	for _, l := range links {
		if err := createLink(rootDir, l); err != nil {
			return err
		}
	}
	return nil
}

// parseLinks checks every --link before anything is created, so a bad one
// changes nothing.
func parseLinks(specs []string) ([]symlink, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("no --link given: name the links to create as TARGET::LINK")
	}
	var out []symlink
	for _, s := range specs {
		target, link, ok := strings.Cut(s, "::")
		switch {
		case !ok || target == "" || strings.ContainsAny(target, "\x00\n"):
			return nil, fmt.Errorf("invalid --link %q: give TARGET::LINK, such as libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so", s)
		case !path.IsAbs(link) || path.Clean(link) != link || link == "/" || strings.ContainsAny(link, "\x00\n"):
			return nil, fmt.Errorf("invalid --link %q: the link must be a clean absolute path inside the container", s)
		}
		out = append(out, symlink{target: target, link: link})
	}
	return out, nil
}

func createLink(rootDir *os.File, l symlink) error {
	dir, err := pathrs.MkdirAllHandle(rootDir, path.Dir(l.link), 0o755)
	if err != nil {
		return fmt.Errorf("failed to create %s in the container: %w", path.Dir(l.link), err)
	}
	defer dir.Close()
	name := path.Base(l.link)
	// EEXIST: the same link from an earlier start, or the image's own file.
	if err := unix.Symlinkat(l.target, int(dir.Fd()), name); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("failed to create the link %s -> %s in the container: %w", l.link, l.target, err)
	}
	return nil
}
