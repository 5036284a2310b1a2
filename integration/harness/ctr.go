package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// CtrNamespace is the containerd namespace CtrRun uses: not k8s.io, so that
// CRI never sees ctr's containers.
const CtrNamespace = "default"

// CtrResult is what a ctr invocation printed and its exit code (for `ctr run`
// without -d, the container's exit code).
type CtrResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// Ctr runs `ctr -a <socket> -n <namespace> args...`; a non-zero exit is an error.
func (c *Containerd) Ctr(ctx context.Context, namespace string, args ...string) (CtrResult, error) {
	res, err := c.runCtr(ctx, append([]string{c.Bins.Ctr, "-a", c.Address, "-n", namespace}, args...))
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("ctr %q exited %d: %s", args, res.ExitCode, res.Stderr)
	}
	return res, err
}

// CtrRun runs `ctr run` in CtrNamespace — the non-CRI path, which NRI never
// sees — with the cached runc, a cgroup under CgroupParent and the extra flags
// (e.g. "--device", "test.hotgpu.dev/gpu=0"; "-d" to detach), then waits for it
// unless detached. err is only for failing to run ctr; the container's exit
// code is in the result.
//
// ctr resolves CDI names itself, in its own process, from the CDI library's
// default dirs (/etc/cdi, /var/run/cdi) — it has no flag for spec dirs and does
// not read the daemon's cdi_spec_dirs. CtrRun therefore runs ctr in a private
// mount namespace where CDIDir is bind-mounted over /var/run/cdi and an empty
// dir over /etc/cdi: ctr sees exactly this instance's specs in CDIDir.
func (c *Containerd) CtrRun(ctx context.Context, id, image string, args []string, flags ...string) (CtrResult, error) {
	if err := c.importImages(ctx, CtrNamespace); err != nil {
		return CtrResult{}, err
	}
	argv := []string{c.Bins.Ctr, "-a", c.Address, "-n", CtrNamespace, "run",
		"--runc-binary", c.Bins.Runc, "--runc-root", c.RuncRoot,
		"--snapshotter", c.Snapshotter, "--fifo-dir", filepath.Join(c.Dir, "fifo"),
		"--cgroup", c.CgroupParent + "/ctr-" + id}
	if !slices.Contains(flags, "-d") && !slices.Contains(flags, "--detach") {
		argv = append(argv, "--rm")
	}
	argv = append(append(argv, flags...), image, id)
	wrapped, err := c.withPrivateCDIDirs(append(argv, args...))
	if err != nil {
		return CtrResult{}, err
	}
	return c.runCtr(ctx, wrapped)
}

// withPrivateCDIDirs wraps argv so it runs where the CDI default dirs show CDIDir.
func (c *Containerd) withPrivateCDIDirs(argv []string) ([]string, error) {
	dynamic, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		return nil, fmt.Errorf("failed to resolve /var/run: %w", err)
	}
	dynamic = filepath.Join(dynamic, "cdi")
	// The bind needs a mount point; an empty /run/cdi is the only trace on the host.
	if err := os.MkdirAll(dynamic, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", dynamic, err)
	}
	const script = `dyn=$1 etc=$2 spec=$3 empty=$4; shift 4
mount --bind "$spec" "$dyn" || exit 125
if [ -d "$etc" ]; then mount --bind "$empty" "$etc" || exit 125; fi
exec "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
		dynamic, "/etc/cdi", c.CDIDir, filepath.Join(c.Dir, "empty")}, argv...), nil
}

func (c *Containerd) runCtr(ctx context.Context, argv []string) (CtrResult, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	res := CtrResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: cmd.ProcessState.ExitCode()}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		err = nil
	}
	if err != nil {
		return res, fmt.Errorf("failed to run %s: %w", argv[0], err)
	}
	return res, nil
}

// importImages imports the test images into a namespace once and, for k8s.io,
// waits until CRI knows them.
func (c *Containerd) importImages(ctx context.Context, namespace string) error {
	c.mu.Lock()
	done := c.ctrNS[namespace]
	c.ctrNS[namespace] = true
	c.mu.Unlock()
	if done {
		return nil
	}
	errs := make([]error, len(c.Bins.Images))
	var wg sync.WaitGroup
	for i, tarball := range c.Bins.Images {
		wg.Go(func() {
			if _, err := c.Ctr(ctx, namespace, "images", "import", "--snapshotter", c.Snapshotter, tarball); err != nil {
				errs[i] = fmt.Errorf("failed to import %s into namespace %s: %w", tarball, namespace, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.mu.Lock()
		delete(c.ctrNS, namespace)
		c.mu.Unlock()
		return err
	}
	if namespace != "k8s.io" {
		return nil
	}
	return c.waitCRIImages(ctx, PauseImage, BusyboxImage)
}

func (c *Containerd) waitCRIImages(ctx context.Context, refs ...string) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, ref := range refs {
		for {
			ok, err := c.cri.HasImage(ctx, ref)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRI does not see imported image %s (err: %v)", ref, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
