package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
)

// Namespace is the pod namespace hotgpud lets ask for GPUs by annotation.
const Namespace = "hotgpu-bench"

// Daemon is a hotgpud process on 8 simulated GPUs.
type Daemon struct {
	Dir    string
	Socket string // API socket
	API    *api.Client
	cmd    *exec.Cmd
	done   chan struct{}
	log    *os.File
}

// StartDaemon starts hotgpud connected to the NRI socket, writing its CDI
// spec into cdiDir, and waits until it is connected.
func StartDaemon(ctx context.Context, bin, dir, nriSocket, cdiDir string) (*Daemon, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create hotgpud dir: %w", err)
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "api.sock"), done: make(chan struct{})}
	d.API = api.NewClient(d.Socket)
	var err error
	if d.log, err = os.Create(filepath.Join(dir, "hotgpud.log")); err != nil {
		return nil, fmt.Errorf("failed to create hotgpud log: %w", err)
	}
	d.cmd = exec.Command(bin, "--simulate", "dgxa100", "--state-dir", filepath.Join(dir, "state"),
		"--nri-socket", nriSocket, "--cdi-dir", cdiDir, "--api-socket", d.Socket,
		"--annotation-namespaces", Namespace, "--annotation-max", "8", "--log-level", "info",
		// No kubelet is part of the run; one on the host (another user's
		// test) must neither see nor hand out these simulated GPUs.
		"--no-device-plugin")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		return nil, fmt.Errorf("failed to start hotgpud %s: %w", bin, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	if err := d.waitConnected(ctx); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	return d, nil
}

// PID is hotgpud's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

func (d *Daemon) waitConnected(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		st, err := d.API.Status(cctx)
		ccancel()
		if err == nil && st.NRIConnected {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("hotgpud exited early; log:\n%s", d.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("hotgpud did not connect to NRI within 30s (last error: %v); log:\n%s", err, d.LogTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// LogTail returns the end of hotgpud's log.
func (d *Daemon) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "hotgpud.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// Stop stops hotgpud (SIGTERM, then SIGKILL after 10 s).
func (d *Daemon) Stop() error {
	defer d.log.Close()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		return errors.New("hotgpud ignored SIGTERM for 10s and was killed")
	}
}
