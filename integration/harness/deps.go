package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// Image references of the two images deps.sh builds with integration/imagetool.
const (
	PauseImage   = "hotgpu.local/pause:1"
	BusyboxImage = "hotgpu.local/busybox:1"
)

// Bins locates the cached binaries and image tarballs deps.sh produced.
type Bins struct {
	Dir        string // bin dir: containerd, ctr, containerd-shim-runc-v2, runc
	Containerd string
	Ctr        string
	Shim       string
	Runc       string
	Images     []string // OCI tarballs to import: pause, busybox
}

var deps struct {
	once sync.Once
	bins *Bins
	took time.Duration
	err  error
}

// ErrNotRoot is returned by BuildDeps when the process cannot run containers.
var ErrNotRoot = errors.New("integration tests need root (containerd, runc, mounts, cgroups): run them as root, e.g. sudo make integration")

// BuildDeps runs integration/deps.sh once per process — it builds containerd,
// ctr, the runc shim, runc and the two images into the cache ($HOTGPU_CACHE or
// ~/.cache/hotgpu) unless they are there already — and reports how long it took.
func BuildDeps(ctx context.Context) (*Bins, time.Duration, error) {
	deps.once.Do(func() {
		start := time.Now()
		deps.bins, deps.err = buildDeps(ctx)
		deps.took = time.Since(start)
	})
	return deps.bins, deps.took, deps.err
}

// Deps returns the built dependencies, skipping t when not root and failing it
// when the build fails.
func Deps(t testing.TB) *Bins {
	t.Helper()
	bins, _, err := BuildDeps(context.Background())
	if errors.Is(err, ErrNotRoot) {
		testenv.Skip(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

func buildDeps(ctx context.Context) (*Bins, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "integration", "deps.sh"))
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("failed to build integration deps with integration/deps.sh (needs go, gcc, libseccomp-dev, pkg-config, busybox-static): %w\n%s", err, tail(stderr.String(), 40))
	}
	lines := strings.Fields(strings.TrimSpace(stdout.String()))
	if len(lines) == 0 {
		return nil, fmt.Errorf("integration/deps.sh printed no bin dir\n%s", tail(stderr.String(), 40))
	}
	return binsIn(lines[len(lines)-1])
}

// binsIn checks the layout deps.sh promises: <cache>/bin/<version>/ and <cache>/images/.
func binsIn(dir string) (*Bins, error) {
	images := filepath.Join(filepath.Dir(filepath.Dir(dir)), "images")
	b := &Bins{
		Dir:        dir,
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		Shim:       filepath.Join(dir, "containerd-shim-runc-v2"),
		Runc:       filepath.Join(dir, "runc"),
		Images:     []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "busybox.tar")},
	}
	for _, p := range append([]string{b.Containerd, b.Ctr, b.Shim, b.Runc}, b.Images...) {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("integration dep missing after deps.sh (remove the cache dir and rerun): %w", err)
		}
	}
	return b, nil
}

// repoRoot finds the module root from the working directory (go test runs in the
// package dir), falling back to this source file's location.
func repoRoot() (string, error) {
	dirs := []string{}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		dirs = append(dirs, filepath.Dir(file))
	}
	for _, d := range dirs {
		for ; d != filepath.Dir(d); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "integration", "deps.sh")); err == nil {
				return d, nil
			}
		}
	}
	return "", errors.New("cannot find integration/deps.sh: run from inside the hotgpu repository")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
