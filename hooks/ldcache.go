package hooks

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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
}

// Run reads the OCI state from stdin, lists the folders in LDConfPath inside
// the container's root and rebuilds the root's linker cache with ldconfig -r.
func (l LDCache) Run(ctx context.Context, stdin io.Reader) error {
	if err := validateFolders(l.Folders); err != nil {
		return err
	}
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
// is opened with O_NOFOLLOW, so nothing on the host can be written.
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
	fd, err := unix.Openat(int(dir.Fd()), filepath.Base(LDConfPath), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("failed to create %s in the container: %w", LDConfPath, err)
	}
	f := os.NewFile(uintptr(fd), LDConfPath)
	content := "# NVIDIA driver libraries mounted by hotgpu (written by hotgpu-hook)\n" + strings.Join(folders, "\n") + "\n"
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s in the container: %w", LDConfPath, err)
	}
	return f.Close()
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
func runLDConfig(ctx context.Context, ldconfig, root string, folders []string) error {
	cmd := exec.CommandContext(ctx, ldconfig, append([]string{"-r", root}, folders...)...)
	cmd.Env = ldconfigEnv
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to update the container's linker cache (%s -r %s): %w: %s", ldconfig, root, err, strings.TrimSpace(string(out)))
	}
	return nil
}
