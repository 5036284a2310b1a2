package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
)

// hotgpud is a hotgpud process on simulated GPUs, connected to a private
// containerd.
type hotgpud struct {
	t      testing.TB
	args   []string
	bin    string   // hotgpud binary; "" builds cmd/hotgpud
	noNRI  bool     // started with --no-nri: ready once the API answers
	env    []string // added to hotgpud's environment at each start
	dir    string
	socket string
	cmd    *exec.Cmd
	log    *os.File
	api    *api.Client
}

// gpuEnv is a private containerd with hotgpud plugged in.
type gpuEnv struct {
	c *harness.Containerd
	d *hotgpud
}

func startEnv(t testing.TB, extra ...string) *gpuEnv {
	t.Helper()
	bins := harness.Deps(t)
	c := harness.StartContainerd(t, harness.Options{Bins: bins})
	return &gpuEnv{c: c, d: startHotgpud(t, c, extra...)}
}

func startHotgpud(t testing.TB, c *harness.Containerd, extra ...string) *hotgpud {
	t.Helper()
	return startHotgpudBin(t, c, "", extra...)
}

// startHotgpudBin is startHotgpud with another hotgpud binary (e.g. one
// built with build tags); "" builds cmd/hotgpud.
func startHotgpudBin(t testing.TB, c *harness.Containerd, bin string, extra ...string) *hotgpud {
	t.Helper()
	dir := t.TempDir()
	h := &hotgpud{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "api.sock")}
	h.args = append([]string{
		"--simulate", "dgxa100",
		"--state-dir", filepath.Join(dir, "state"),
		"--nri-socket", c.NRISocket,
		"--cdi-dir", c.CDIDir,
		"--api-socket", h.socket,
		"--annotation-namespaces", harness.PodNamespace,
		"--annotation-max", "4",
		"--log-level", "debug",
		// A private kubelet dir: the device plugin waits there for a kubelet
		// that never comes, instead of registering with a real one on this
		// host (kubelet tests pass their own --kubelet-dir, which wins).
		"--kubelet-dir", filepath.Join(dir, "kubelet-plugins"),
	}, extra...)
	h.api = api.NewClient(h.socket)
	h.start()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "hotgpud.log"))
			t.Logf("hotgpud log:\n%s", tail(string(b), 60))
		}
	})
	return h
}

func (h *hotgpud) start() {
	h.t.Helper()
	var err error
	h.log, err = os.OpenFile(filepath.Join(h.dir, "hotgpud.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	bin := h.bin
	if bin == "" {
		bin = buildBin(h.t, "./cmd/hotgpud")
	}
	h.cmd = exec.Command(bin, h.args...)
	h.cmd.Env = append(os.Environ(), h.env...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	// It dies with the test binary, even one killed by -timeout.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.waitConnected()
}

// waitConnected waits until the API answers and, unless started without
// NRI, NRI is connected.
func (h *hotgpud) waitConnected() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := h.api.Status(ctx)
		cancel()
		if err == nil && (st.NRIConnected || h.noNRI) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(h.dir, "hotgpud.log"))
	h.t.Fatalf("hotgpud did not connect to NRI within 30s; log:\n%s", tail(string(b), 40))
}

// kill9 kills hotgpud without giving it a chance to clean up.
func (h *hotgpud) kill9() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	_ = h.waitExit(10 * time.Second)
}

// stop shuts hotgpud down with SIGTERM; a hotgpud that does not exit
// cleanly within 10 s fails the test.
func (h *hotgpud) stop() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	if err := h.waitExit(10 * time.Second); err != nil {
		h.t.Errorf("hotgpud did not shut down cleanly: %v", err)
	}
}

// waitExit waits for hotgpud to exit, killing it after timeout, and
// returns how it ended (nil: exit status 0).
func (h *hotgpud) waitExit(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = h.cmd.Process.Kill()
		<-done
		err = fmt.Errorf("still running after %s", timeout)
	}
	h.cmd = nil
	h.log.Close()
	return err
}

// holders returns GPU index -> "reason:containerID" from hotgpud's ledger.
func (h *hotgpud) holders(t testing.TB) map[int]string {
	t.Helper()
	gpus, err := h.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, g := range gpus {
		if g.Grant != nil {
			out[g.Index] = string(g.Grant.Reason) + ":" + g.Grant.Holder.ContainerID
		}
	}
	return out
}

func (h *hotgpud) uuid(t testing.TB, index int) string {
	t.Helper()
	gpus, err := h.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return gpus[index].UUID
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
