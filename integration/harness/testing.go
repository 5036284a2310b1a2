package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// PodNamespace is the Kubernetes namespace of pods made by MustRunPod.
const PodNamespace = "hotgpu-it"

var shared struct {
	mu sync.Mutex
	c  *Containerd
}

// Main is a TestMain for packages that use the harness: it builds the deps
// first and prints how long that took, runs the tests, then cleans up the
// Shared containerd. Use it as `func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }`.
func Main(m *testing.M) int {
	bins, took, err := BuildDeps(context.Background())
	switch {
	case errors.Is(err, ErrNotRoot):
		fmt.Fprintf(os.Stderr, "integration: %v; tests will skip\n", err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	default:
		fmt.Fprintf(os.Stderr, "integration: deps ready in %v (%s)\n", took.Round(time.Millisecond), bins.Dir)
	}
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c != nil {
		if err := shared.c.Cleanup(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: failed to clean up shared containerd: %v\n", err)
			code = max(code, 1)
		}
	}
	return code
}

// Shared returns one containerd, started with default options on first use and
// shared by every test in the process; Main cleans it up. Tests on it must not
// stop or reconfigure it, and should remove what they create (MustRunPod does).
// Tests that restart containerd or attach NRI plugins use StartContainerd.
func Shared(t testing.TB) *Containerd {
	t.Helper()
	bins := Deps(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := Start(ctx, Options{Bins: bins})
		if err != nil {
			t.Fatal(err)
		}
		shared.c = c
	}
	return shared.c
}

// MustRunPod runs a pod in PodNamespace with a random UID, and stops and
// removes it when t ends.
func (c *Containerd) MustRunPod(t testing.TB, name string, annotations map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.cri.RunPod(ctx, name, PodNamespace, "", annotations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := errors.Join(c.cri.StopPod(ctx, id), c.cri.RemovePod(ctx, id)); err != nil && c.Running() {
			t.Errorf("failed to remove pod: %v", err)
		}
	})
	return id
}

// MustRunContainer creates and starts a container in a pod.
func (c *Containerd) MustRunContainer(t testing.TB, podID, name string, o ContainerOptions) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.cri.RunContainer(ctx, podID, name, o)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// MustExec runs cmd in a container through CRI ExecSync.
func (c *Containerd) MustExec(t testing.TB, id string, cmd ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, stderr, exitCode, err := c.cri.Exec(ctx, id, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return stdout, stderr, exitCode
}
