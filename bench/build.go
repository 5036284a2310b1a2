package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Tools are the binaries a run needs.
type Tools struct {
	Repo        string
	Hotgpud     string
	Hotgpu      string
	NvidiaCTK   string // "" when bench/deps.sh could not build it
	NvidiaCR    string // nvidia-container-runtime
	BaselineErr error  // why the baselines are missing
	Took        map[string]time.Duration
}

// FindRepo walks up from the working directory to hotgpu's module root.
func FindRepo() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; d != filepath.Dir(d); d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/hotgpu/hotgpu\n")) {
			return d, nil
		}
	}
	return "", errors.New("cannot find hotgpu's go.mod: run from inside the repository (make bench does)")
}

// BuildTools builds hotgpud and the hotgpu CLI into dir, as `make build`
// does (hotgpu cgo-free, hotgpu-cdi beside it for `hotgpu cdi`), and the
// baselines into the cache (bench/deps.sh; a no-op when cached). The
// baselines failing to build is not fatal: their rows say why.
func BuildTools(ctx context.Context, repo, dir string) (*Tools, error) {
	t := &Tools{Repo: repo, Took: map[string]time.Duration{}}
	start := time.Now()
	for _, b := range []struct{ cgo, out, pkg string }{
		{"1", dir + "/", "./cmd/hotgpud"},
		{"1", filepath.Join(dir, "hotgpu-cdi"), "./cmd/hotgpu"},
		{"0", filepath.Join(dir, "hotgpu"), "./cmd/hotgpu"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", b.out, b.pkg)
		cmd.Dir = repo
		// go-nvml's header marks calls deprecated; cgo would print each one.
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo, "CGO_CFLAGS="+os.Getenv("CGO_CFLAGS")+" -Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("failed to build %s (fix the build, then rerun): %w\n%s", b.out, err, lastLines(string(out), 20))
		}
	}
	t.Hotgpud, t.Hotgpu = filepath.Join(dir, "hotgpud"), filepath.Join(dir, "hotgpu")
	t.Took["hotgpu binaries"] = time.Since(start)

	start = time.Now()
	bin, err := runScript(ctx, repo, "bench/deps.sh")
	t.Took["baselines (bench/deps.sh)"] = time.Since(start)
	if err != nil {
		t.BaselineErr = err
		return t, nil
	}
	t.NvidiaCTK, t.NvidiaCR = filepath.Join(bin, "nvidia-ctk"), filepath.Join(bin, "nvidia-container-runtime")
	return t, nil
}

// runScript runs a deps script and returns the last line it printed.
func runScript(ctx context.Context, repo, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repo, script))
	cmd.Dir = repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed: %w\n%s", script, err, lastLines(stderr.String(), 20))
	}
	f := strings.Fields(stdout.String())
	if len(f) == 0 {
		return "", fmt.Errorf("%s printed no bin dir", script)
	}
	return f[len(f)-1], nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
