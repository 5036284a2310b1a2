package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/hookenv"
)

// LDConfPath is the file update-ldcache writes inside the container. The
// "00-" prefix puts the driver's libraries ahead of any bundled copies.
const LDConfPath = "/etc/ld.so.conf.d/00-hotgpu.conf"

// DefaultLDConfigs are the host ldconfig binaries tried, in order. The
// container's own ldconfig is never run: it is container-controlled code.
var DefaultLDConfigs = []string{"/sbin/ldconfig", "/usr/sbin/ldconfig"}

// DefaultLDCacheTimeout bounds one update-ldcache run, below the timeout
// the CDI spec gives the runtime (cdi.LDCacheHookTimeout), so the hook ends
// with its own error instead of being killed mid-write.
const DefaultLDCacheTimeout = 8 * time.Second

// ldconfigEnv is the whole environment ldconfig gets: the hook's own
// environment comes from the runtime and is not ours to pass on.
var ldconfigEnv = hookenv.Env

// LDCache is one update-ldcache run.
type LDCache struct {
	// Folders are library directories as seen inside the container.
	Folders []string
	// LDConfig is the host ldconfig to run; "" tries DefaultLDConfigs and
	// skips the cache update when none exists.
	LDConfig string
	// Timeout bounds the whole run; 0 means DefaultLDCacheTimeout.
	Timeout time.Duration
}

// Run reads the OCI state from stdin, lists the folders in LDConfPath inside
// the container's root and rebuilds the root's linker cache with ldconfig -r.
func (l LDCache) Run(ctx context.Context, stdin io.Reader) error {
	if err := validateFolders(l.Folders); err != nil {
		return err
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = DefaultLDCacheTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	root, err := containerRoot(stdin)
	if err != nil {
		return err
	}
	if err := writeConf(root, l.Folders); err != nil {
		return err
	}
	ldconfig := l.LDConfig
	if ldconfig == "" {
		if ldconfig = findLDConfig(); ldconfig == "" {
			return nil // nothing to run: the conf file still helps a later ldconfig
		}
	}
	return runLDConfig(ctx, ldconfig, root, l.Folders)
}

// validateFolders keeps folders to plain absolute paths: a newline would let
// a folder smuggle an "include" directive into the linker configuration.
func validateFolders(folders []string) error {
	if len(folders) == 0 {
		return fmt.Errorf("no --folder given: name the library directories to add to the container's linker cache")
	}
	for _, f := range folders {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f || strings.ContainsAny(f, " \t\r\n") {
			return fmt.Errorf("invalid --folder %q: give a clean absolute path without whitespace", f)
		}
	}
	return nil
}

// writeConf writes LDConfPath inside root. Every component is resolved inside
// root (a symlink /etc -> /somewhere stays within root) and the file itself
// is opened without following a symlink and only once it is known to be a
// regular file, so nothing on the host is written and no FIFO or device the
// image put there is opened for writing.
func writeConf(root string, folders []string) error {
	rootDir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open the container root %s: %w", root, err)
	}
	defer rootDir.Close()
	dir, err := pathrs.MkdirAllHandle(rootDir, filepath.Dir(LDConfPath), 0o755)
	if err != nil {
		return fmt.Errorf("failed to create %s in the container: %w", filepath.Dir(LDConfPath), err)
	}
	defer dir.Close()
	f, err := openConf(dir)
	if err != nil {
		return fmt.Errorf("failed to create %s in the container: %w", LDConfPath, err)
	}
	content := "# NVIDIA driver libraries mounted by hotgpu (written by hotgpu-hook)\n" + strings.Join(folders, "\n") + "\n"
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteString(content)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to write %s in the container: %w", LDConfPath, err)
	}
	return nil
}

// openConf opens LDConfPath's file in dir for writing: a new file, or an
// existing regular one. An existing entry is first looked at through an
// O_PATH handle (opening a FIFO for writing would wait for a reader forever,
// opening a device can act on it) and then reopened through that very
// handle, so it cannot be swapped in between.
func openConf(dir *os.File) (*os.File, error) {
	name := filepath.Base(LDConfPath)
	const flags = unix.O_WRONLY | unix.O_NONBLOCK | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err == nil {
		return os.NewFile(uintptr(fd), LDConfPath), nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return nil, err
	}
	pfd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("the image has one that is not a regular file (mode %#o): remove it from the image", st.Mode&unix.S_IFMT)
	}
	fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags&^unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), LDConfPath), nil
}

func findLDConfig() string {
	for _, p := range DefaultLDConfigs {
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// runLDConfig rebuilds the cache of root. ldconfig -r chroots into root, so
// the folders and the cache are resolved inside the container. The folders
// are also passed explicitly for images without an ld.so.conf include line.
//
// The image's /etc/ld.so.conf and what it includes are read by ldconfig and
// may be FIFOs that block it: ctx's deadline kills it.
func runLDConfig(ctx context.Context, ldconfig, root string, folders []string) error {
	cmd := exec.CommandContext(ctx, ldconfig, append([]string{"-r", root}, folders...)...)
	cmd.Env = ldconfigEnv
	cmd.Dir = "/"
	cmd.WaitDelay = time.Second // a child holding the output pipe cannot hold the hook
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("failed to update the container's linker cache: %s -r %s did not finish before the hook's deadline "+
			"and was stopped (is the image's /etc/ld.so.conf, or a file it includes, a FIFO or a device?): %w", ldconfig, root, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("failed to update the container's linker cache (%s -r %s): %w: %s", ldconfig, root, err, strings.TrimSpace(string(out)))
	}
	return nil
}
