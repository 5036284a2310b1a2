package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestDemo builds hotgpud, hotgpu and the demo and runs the demo as `make
// demo` would, checking that each act happened and that it left nothing.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the demo runs containerd: needs root")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/hotgpu/hotgpu/cmd/hotgpud",
		"github.com/hotgpu/hotgpu/cmd/hotgpu", "github.com/hotgpu/hotgpu/integration/demo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "demo"))
	cmd.Env = append(os.Environ(), "HOTGPU_BIN="+bin)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("demo ran in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	// hotgpu ls shows GPU 0 held by the pod's container for its annotation.
	if !regexp.MustCompile(`(?m)^\s+0\s+GPU-\S+.*\sdemo/trainer/app\s+annotation\s`).Match(out) {
		t.Errorf("hotgpu ls in the demo does not show GPU 0 held by annotation:\n%s", out)
	}
	for _, want := range []string{
		"/dev/nvidia0",   // the annotation's GPU
		"attached GPU 1", // hotgpu attach picked the next free GPU
		"/dev/nvidia1': No such device or address", // allowed, no driver
		"detached GPU 1",
		"/dev/nvidia1': Operation not permitted", // self-made node refused
		"Everything the demo made is gone",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The demo names its containerd's and hotgpud's sockets; their dirs must be gone.
	dirs := regexp.MustCompile(`(/\S+)/(c|hotgpu)\.sock`).FindAllStringSubmatch(string(out), -1)
	if len(dirs) < 2 {
		t.Errorf("demo output names no containerd and hotgpud sockets:\n%s", out)
	}
	for _, m := range dirs {
		if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
			t.Errorf("demo left %s behind", m[1])
		}
	}
}
