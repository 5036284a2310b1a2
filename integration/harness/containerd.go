package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// Options configure a private containerd. Only Bins is required.
type Options struct {
	Bins *Bins
	// TempDir is the parent of the instance dir (default os.TempDir()). Keep it
	// short: unix socket paths must fit in 107 bytes.
	TempDir string
	// ExtraCDISpecDirs are added to cdi_spec_dirs after the instance's own CDIDir.
	ExtraCDISpecDirs []string
	// Snapshotter is "overlayfs" (default; works here) or "native".
	Snapshotter string
	// Imports are containerd drop-ins (config v3 `imports`), e.g. the repo's
	// etc/containerd/ drop-in. They merge per table, unlike ExtraConfig.
	Imports []string
	// ExtraConfig is TOML appended to the generated config; it may only add
	// tables the generated config does not already have.
	ExtraConfig string
	// LogLevel is containerd's log level (default "info"); the log is LogPath.
	LogLevel string
	// NRI timeouts (containerd defaults: 5s and 2s).
	NRIRegistrationTimeout, NRIRequestTimeout time.Duration
	// Env is added to containerd's environment (and so its shims').
	Env []string
}

// Containerd is a running private containerd; every path is under Dir.
type Containerd struct {
	Dir          string
	Root, State  string
	Address      string // containerd gRPC socket (CRI is served here too)
	TTRPCAddress string
	DebugAddress string
	NRISocket    string   // where NRI plugins (hotgpud) connect: nri/nri.sock, alone in its dir (a pod mounts the dir)
	CDIDir       string   // first cdi_spec_dirs entry, and the one ctr --device sees
	CDISpecDirs  []string // all cdi_spec_dirs
	RuncRoot     string
	// CgroupParent is the per-instance cgroup (e.g. "/hotgpu-it-1234") under
	// which every pod and ctr container is created, in every hierarchy.
	CgroupParent string
	Snapshotter  string
	LogPath      string
	Bins         *Bins

	opts Options
	cri  *CRI

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited
	ctrNS     map[string]bool
	cleanOnce sync.Once
	cleanErr  error
}

// StartContainerd starts a private containerd for t and registers its cleanup;
// when t failed, the tail of containerd's log is logged first. It skips t when
// not root.
func StartContainerd(t testing.TB, opts Options) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, ErrNotRoot.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log tail (%s):\n%s", c.LogPath, c.LogTail(60))
		}
		if err := c.Cleanup(); err != nil {
			t.Errorf("failed to clean up containerd: %v", err)
		}
	})
	return c
}

// Start starts a private containerd, waits until CRI answers and imports the
// pause and busybox images into namespace k8s.io. On error nothing is left behind.
func Start(ctx context.Context, opts Options) (*Containerd, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	c, err := newContainerd(opts)
	if err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		err = fmt.Errorf("failed to start containerd: %w\nlog tail:\n%s", err, c.LogTail(40))
		return nil, errors.Join(err, c.Cleanup())
	}
	if err := c.importImages(ctx, "k8s.io"); err != nil {
		return nil, errors.Join(err, c.Cleanup())
	}
	return c, nil
}

func newContainerd(opts Options) (*Containerd, error) {
	if opts.Bins == nil {
		return nil, errors.New("harness.Options.Bins is required: pass harness.Deps(t)")
	}
	if opts.Snapshotter == "" {
		opts.Snapshotter = "overlayfs"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.NRIRegistrationTimeout == 0 {
		opts.NRIRegistrationTimeout = 5 * time.Second
	}
	if opts.NRIRequestTimeout == 0 {
		opts.NRIRequestTimeout = 2 * time.Second
	}
	dir, err := os.MkdirTemp(opts.TempDir, "hgctd-")
	if err != nil {
		return nil, fmt.Errorf("failed to create containerd dir: %w", err)
	}
	c := &Containerd{
		Dir: dir, Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		Address: filepath.Join(dir, "c.sock"), TTRPCAddress: filepath.Join(dir, "c.sock.ttrpc"),
		DebugAddress: filepath.Join(dir, "debug.sock"), NRISocket: filepath.Join(dir, "nri", "nri.sock"),
		CDIDir: filepath.Join(dir, "cdi"), RuncRoot: filepath.Join(dir, "state", "runc"),
		CgroupParent: "/hotgpu-it-" + strings.TrimPrefix(filepath.Base(dir), "hgctd-"),
		Snapshotter:  opts.Snapshotter, LogPath: filepath.Join(dir, "containerd.log"),
		Bins: opts.Bins, opts: opts, ctrNS: map[string]bool{},
	}
	c.CDISpecDirs = append([]string{c.CDIDir}, opts.ExtraCDISpecDirs...)
	if len(c.Address) > 100 {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("socket path %s is too long for a unix socket: use a shorter Options.TempDir", c.Address)
	}
	for _, d := range []string{c.Root, c.State, c.CDIDir, filepath.Dir(c.NRISocket), filepath.Join(dir, "pods"), filepath.Join(dir, "fifo"), filepath.Join(dir, "empty")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	cfg := configData{
		Containerd: c, Bins: opts.Bins, PauseImage: PauseImage, Imports: opts.Imports,
		LogLevel: opts.LogLevel, NRIRegistrationTimeout: opts.NRIRegistrationTimeout,
		NRIRequestTimeout: opts.NRIRequestTimeout, ExtraConfig: opts.ExtraConfig,
	}
	if err := writeConfig(c.configPath(), cfg); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to write containerd config: %w", err)
	}
	return c, nil
}

func (c *Containerd) configPath() string { return filepath.Join(c.Dir, "config.toml") }

// start runs the containerd process and waits until its CRI service answers.
func (c *Containerd) start(ctx context.Context) error {
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("failed to open containerd log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(c.Bins.Containerd, "--config", c.configPath())
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The cached shim and runc come first on PATH: containerd finds the shim
	// there, and the shim finds runc there for non-CRI (ctr) containers.
	cmd.Env = append(append(os.Environ(), "PATH="+c.Bins.Dir+":"+os.Getenv("PATH")), c.opts.Env...)
	// If the test binary dies (timeout panic), take containerd with it; shims
	// and containers are reaped by the next Cleanup of the same dir only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to exec %s: %w", c.Bins.Containerd, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	if c.cri == nil {
		if c.cri, err = DialCRI(c.Address, c.CgroupParent, filepath.Join(c.Dir, "pods")); err != nil {
			return err
		}
	}
	return c.waitReady(ctx, done)
}

func (c *Containerd) waitReady(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Dial the socket ourselves first: gRPC would keep answering with its
		// cached dial error for up to a backoff period after the socket appears.
		err := c.cri.Ping(ctx, c.Address)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return errors.New("containerd exited before it answered")
		case <-ctx.Done():
			return fmt.Errorf("containerd did not answer on %s: %w (last error: %v)", c.Address, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Running reports whether the containerd process is alive.
func (c *Containerd) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Stop stops containerd gracefully (SIGTERM, SIGKILL after 10s). Shims and
// containers keep running, as with `systemctl stop containerd`.
func (c *Containerd) Stop() error { return c.signal(syscall.SIGTERM, 10*time.Second) }

// Kill kills containerd with SIGKILL, as a crash would. Shims and containers
// keep running.
func (c *Containerd) Kill() error { return c.signal(syscall.SIGKILL, 10*time.Second) }

func (c *Containerd) signal(sig syscall.Signal, grace time.Duration) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("failed to signal containerd: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("containerd ignored %v for %v and was killed", sig, grace)
}

// Restart stops containerd (if it still runs) and starts it again on the same
// root, state and sockets, so running containers survive and are recovered.
// After Kill, Restart is a crash-restart.
func (c *Containerd) Restart(ctx context.Context) error {
	if err := c.Stop(); err != nil {
		return err
	}
	if err := c.start(ctx); err != nil {
		return fmt.Errorf("failed to restart containerd: %w\nlog tail:\n%s", err, c.LogTail(40))
	}
	return nil
}

// CRI returns the CRI client talking to this containerd (it survives restarts).
func (c *Containerd) CRI() *CRI { return c.cri }

// LogTail returns the last n lines of containerd's log.
func (c *Containerd) LogTail(n int) string {
	b, err := os.ReadFile(c.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(string(b), n)
}
