package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// NvidiaHandler is the CRI runtime handler that runs nvidia-container-runtime.
const NvidiaHandler = "nvidia"

// Env is two private containerds side by side: A with hotgpud plugged in over
// NRI, B with no NRI plugin, whose runtime handler "nvidia" is NVIDIA's
// nvidia-container-runtime in cdi mode wrapping the same runc. B reads the
// spec hotgpud writes into A's CDI dir, so every variant injects the same GPU
// from the same spec.
type Env struct {
	A, B      *harness.Containerd
	PodsA     *Pods
	PodsB     *Pods
	Daemon    *Daemon
	Spec      string // the CDI spec file hotgpud wrote
	NvidiaErr error  // why the nvidia handler is missing, if it is
}

// StartEnv starts both containerds; hotgpud is started later (StartDaemon)
// so that the two instances can first be compared with no plugin at all.
func StartEnv(ctx context.Context, bins *harness.Bins, t *Tools, work string) (*Env, error) {
	a, err := harness.Start(ctx, harness.Options{Bins: bins})
	if err != nil {
		return nil, fmt.Errorf("failed to start containerd A: %w", err)
	}
	e := &Env{A: a, PodsA: NewPods(a)}
	opts := harness.Options{Bins: bins, ExtraCDISpecDirs: []string{a.CDIDir}}
	if t.NvidiaCR == "" {
		e.NvidiaErr = fmt.Errorf("nvidia-container-runtime was not built: %w", t.BaselineErr)
	} else {
		cfg, err := writeNvidiaConfig(filepath.Join(work, "nvidia-container-runtime"), bins.Runc, a.CDIDir)
		if err != nil {
			return nil, errors.Join(err, e.Close())
		}
		opts.Env = []string{"NVIDIA_CTK_CONFIG_FILE_PATH=" + cfg}
		opts.ExtraConfig = nvidiaRuntimeTOML(t.NvidiaCR)
	}
	if e.B, err = harness.Start(ctx, opts); err != nil {
		return nil, errors.Join(fmt.Errorf("failed to start containerd B: %w", err), e.Close())
	}
	e.PodsB = NewPods(e.B)
	return e, nil
}

// StartDaemon plugs hotgpud into A and waits for its CDI spec.
func (e *Env) StartDaemon(ctx context.Context, bin, dir string) error {
	d, err := StartDaemon(ctx, bin, dir, e.A.NRISocket, e.A.CDIDir)
	if err != nil {
		return err
	}
	e.Daemon = d
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(e.A.CDIDir, "*")); len(m) > 0 {
			e.Spec = m[0]
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("hotgpud wrote no CDI spec into %s within 10s; log:\n%s", e.A.CDIDir, d.LogTail())
}

// Close stops hotgpud and removes both containerds with all they made.
func (e *Env) Close() error {
	var errs []error
	if e.Daemon != nil {
		errs = append(errs, e.Daemon.Stop())
	}
	for _, c := range []*harness.Containerd{e.B, e.A} {
		if c != nil {
			errs = append(errs, c.Cleanup())
		}
	}
	return errors.Join(errs...)
}

// nvidiaRuntimeTOML adds the "nvidia" handler, as NVIDIA's docs configure
// containerd: runc's shim with nvidia-container-runtime as the runc binary.
func nvidiaRuntimeTOML(bin string) string {
	return fmt.Sprintf(`
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]
  runtime_type = 'io.containerd.runc.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s.options]
    BinaryName = %q
    SystemdCgroup = false
`, NvidiaHandler, NvidiaHandler, bin)
}

// writeNvidiaConfig writes nvidia-container-runtime's config: cdi mode,
// hotgpud's spec dir, the cached runc underneath; otherwise NVIDIA's defaults
// (no debug log file).
func writeNvidiaConfig(dir, runc, specDir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cfg := strings.Join([]string{
		`[nvidia-container-runtime]`,
		`log-level = "info"`,
		`mode = "cdi"`,
		fmt.Sprintf(`runtimes = [%q]`, runc),
		`[nvidia-container-runtime.modes.cdi]`,
		`default-kind = "nvidia.com/gpu"`,
		fmt.Sprintf(`spec-dirs = [%q]`, specDir),
		`annotation-prefixes = ["cdi.k8s.io/"]`,
		``,
	}, "\n")
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return "", fmt.Errorf("failed to write nvidia-container-runtime config: %w", err)
	}
	return path, nil
}
