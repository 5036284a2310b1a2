package driver

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// maxLinks bounds symlink expansion like the kernel's MAXSYMLINKS.
const maxLinks = 40

// resolve returns the canonical form of p inside root: every symlink
// followed as the driver root itself sees it, an absolute target starting
// again at root (a driver container's /usr/lib -> /lib stays in the
// container), ".." never climbing above root. The result is a clean
// absolute path, to be joined with root on the host.
func resolve(root, p string) (string, error) {
	cur := "/"
	rest := strings.Split(p, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		host := filepath.Join(root, next)
		info, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if info.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", &os.PathError{Op: "resolve", Path: host, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", fmt.Errorf("failed to read the link %s: %w", host, err)
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}
