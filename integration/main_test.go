package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// TestMain builds containerd, runc and the images first (printing how long that
// took), and cleans up the shared containerd and the binaries built for the
// tests at the end.
func TestMain(m *testing.M) {
	code := harness.Main(m)
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// The module's own binaries, built once per test binary.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string
}

// buildBin builds a main package of this module (e.g. "./cmd/hotgpu") with
// build tags, once per test binary.
func buildBin(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	key := pkg + " " + strings.Join(tags, ",")
	built.mu.Lock()
	defer built.mu.Unlock()
	if p, ok := built.bins[key]; ok {
		return p
	}
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "hotgpu-it-bin-")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]string{}
	}
	out := filepath.Join(built.dir, fmt.Sprintf("%s-%d", filepath.Base(pkg), len(built.bins)))
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "github.com/hotgpu/hotgpu/"+strings.TrimPrefix(pkg, "./"))...)
	if pkg == "./cmd/hotgpu" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // the CLI as installed (make build)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build %s: %v\n%s", pkg, err, b)
	}
	built.bins[key] = out
	return out
}
