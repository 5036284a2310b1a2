package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/internal/mountns"
)

// LDCachePath is the linker cache a program's loader reads.
const LDCachePath = "/etc/ld.so.cache"

// CacheMount is the linker cache GiveRunning mounted over a running
// container's /etc/ld.so.cache: the cache file, on a tmpfs of hotgpu's own,
// and the empty file made to mount it on when the container had no cache
// (zero when it had one). Undoing both (mountns.Undo) restores the
// container's own view.
type CacheMount struct {
	Mounted, Made mountns.FileID
}

// scratchCache is the cache file's name in the scratch tmpfs, which the
// view shows at /dev.
const scratchCache = "ld.so.cache"

// mountLiveCache gives a running container a linker cache that lists
// folders too, without writing to any file of the container: the host's
// ldconfig reads the container's files through a read-only copy of its
// mounts (mountns.ScratchView: its configuration, its libraries, the
// driver's just mounted) and writes the cache, and nothing else (-X: no
// links), into hotgpu's own tmpfs; that file is then mounted read-only
// over the container's /etc/ld.so.cache, which stays as it was underneath.
func mountLiveCache(ctx context.Context, pid int, root *os.File, folders []string) (*CacheMount, error) {
	ldconfig := findLDConfig()
	if ldconfig == "" {
		return nil, fmt.Errorf("%w (looked for %s): the linker cache lists none of the driver's libraries", ErrNoLDConfig, strings.Join(DefaultLDConfigs, ", "))
	}
	v, err := mountns.ScratchView(pid)
	if err != nil {
		return nil, fmt.Errorf("failed to build the container's linker cache: %w", err)
	}
	defer v.Close()
	args := append([]string{"-X", "-r", "/proc/self/fd/3", "-C", "/dev/" + scratchCache}, folders...)
	cmd := exec.CommandContext(ctx, ldconfig, args...)
	cmd.ExtraFiles = []*os.File{v.Root} // fd 3
	cmd.Env = ldconfigEnv
	cmd.Dir = "/"
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("failed to build the container's linker cache: %s did not finish in time "+
			"(is the image's /etc/ld.so.conf, or a file it includes, a FIFO or a device?): %w", ldconfig, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("failed to build the container's linker cache (%s %s): %w: %s", ldconfig, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	t, err := mountns.CloneFile(v.Scratch, scratchCache)
	if err != nil {
		return nil, fmt.Errorf("failed to build the container's linker cache: %w", err)
	}
	defer t.Close()
	var cm CacheMount
	if cm.Mounted.Dev, cm.Mounted.Ino, err = t.Stat(); err != nil {
		return nil, fmt.Errorf("failed to stat the container's new linker cache: %w", err)
	}
	var mounted bool
	err = mountns.Enter(pid, func() (err error) {
		cm.Made, mounted, err = mountns.Over(root, t, LDCachePath)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !mounted {
		return nil, errors.New("the container shows hotgpu's linker cache already")
	}
	return &cm, nil
}
