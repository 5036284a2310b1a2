package doctor

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/daemon"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// startHotgpud runs a real hotgpud on a simulated node with private paths
// (no NRI, a kubelet dir no kubelet uses) and returns its config.
func startHotgpud(t *testing.T, preset string) *configv1.Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "doctor-") // short: a socket path has 108 bytes
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := configv1.Default()
	cfg.Simulate = preset
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CDI.Dir = filepath.Join(dir, "cdi")
	cfg.API.Socket = filepath.Join(dir, "api.sock")
	cfg.NRI.Disabled = true
	cfg.DevicePlugin.KubeletDir = filepath.Join(dir, "device-plugins")
	cfg.ReconcileInterval = configv1.Duration{Duration: time.Second} // the least; the first reconcile comes after it
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := daemon.New(cfg, logrus.NewEntry(log))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hotgpud: %v", err)
		}
	})
	c := api.NewClient(cfg.API.Socket)
	for range 500 { // until it serves and has reconciled once
		if st, err := c.Status(ctx); err == nil && !st.LastReconcile.IsZero() {
			return cfg
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("hotgpud did not come up and reconcile")
	return nil
}

func TestRunWithHotgpudUp(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			cfg := startHotgpud(t, preset)
			r := Run(context.Background(), Config{Inventory: simulated(t, preset, nil), Socket: cfg.API.Socket, Daemon: api.NewClient(cfg.API.Socket),
				CDIDir: t.TempDir()})
			if r.Failed {
				t.Errorf("a healthy simulated node fails:\n%s", dump(r.Checks))
			}
			expect(t, find(t, r.Checks, StepHotgpud, "reachable"), OK, cfg.API.Socket, "simulating "+preset)
			expect(t, find(t, r.Checks, StepHotgpud, "ledger"), OK, "8 GPU(s), 0 held")
			expect(t, find(t, r.Checks, StepHotgpud, "kubelet"), Warn, "waiting for kubelet", "is kubelet running")
			expect(t, find(t, r.Checks, StepHotgpud, "reconcile"), OK, "last reconcile", "every 1s")
			// The spec hotgpud says it wrote, not the one under CDIDir.
			spec := filepath.Join(cfg.CDI.Dir, "hotgpu.yaml")
			expect(t, find(t, r.Checks, StepCDI, "spec"), OK, spec, "valid CDI")
			expect(t, find(t, r.Checks, StepCDI, "devices"), OK, "names every GPU")
			expect(t, find(t, r.Checks, StepRuntime, "nri"), Warn, "not connected", "disable = false")
			expect(t, find(t, r.Checks, StepRuntime, "cdi"), OK, spec)
		})
	}
}

func TestRunWithHotgpudDown(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "api.sock")
			r := Run(context.Background(), Config{Inventory: simulated(t, preset, nil), Socket: socket, Daemon: api.NewClient(socket),
				CDIDir: t.TempDir(), AttachTest: true})
			if !r.Failed {
				t.Errorf("hotgpud down is not a failure:\n%s", dump(r.Checks))
			}
			expect(t, find(t, r.Checks, StepHotgpud, "reachable"), Fail, "no socket at "+socket, "systemctl start hotgpud")
			expect(t, find(t, r.Checks, StepRuntime, "nri"), Skip, "not reachable")
			expect(t, find(t, r.Checks, StepAttachTest, "attach"), Skip, "not reachable")
			expect(t, find(t, r.Checks, StepCDI, "spec"), Warn, "no CDI spec")
			expect(t, find(t, r.Checks, StepCDI, "generated spec"), OK)
			expect(t, find(t, r.Checks, StepDriver, "nvml"), OK, "simulated "+preset)
		})
	}
}

func TestStaleSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "doctor-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", socket)
	must(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false) // as a killed hotgpud leaves it
	must(t, l.Close())
	_, _, cs := hotgpudChecks(context.Background(), socket, api.NewClient(socket), time.Now())
	expect(t, find(t, cs, StepHotgpud, "reachable"), Fail, "stale socket", "nothing listens", "replaces the stale socket")

	plain := filepath.Join(dir, "plain")
	must(t, os.WriteFile(plain, nil, 0o600))
	_, _, cs = hotgpudChecks(context.Background(), plain, api.NewClient(plain), time.Now())
	expect(t, find(t, cs, StepHotgpud, "reachable"), Fail, "is not a socket")
}

func TestReconcileCheck(t *testing.T) {
	now := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		st     api.Status
		status Status
		says   string
	}{
		{"recent", api.Status{LastReconcile: now.Add(-10 * time.Second), ReconcileInterval: "30s"}, OK, "last reconcile 10s ago"},
		{"overdue", api.Status{LastReconcile: now.Add(-time.Hour), ReconcileInterval: "30s"}, Warn, "overdue"},
		{"none yet, just started", api.Status{Uptime: "5s", ReconcileInterval: "30s"}, OK, "none yet"},
		{"none after an hour", api.Status{Uptime: "1h0m0s", ReconcileInterval: "30s"}, Warn, "no reconcile"},
		{"an older hotgpud", api.Status{Uptime: "5s"}, Warn, "no reconcile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, reconcileCheck(&tt.st, now), tt.status, tt.says)
		})
	}
}

func TestLedgerCheck(t *testing.T) {
	gpus := []api.GPUStatus{{Healthy: true}, {Healthy: true, Grant: &ledger.Grant{Reason: ledger.Attach}}, {Healthy: false}}
	gpus[2].Index = 2
	expect(t, ledgerCheck(&api.Status{Held: 1}, gpus), Warn, "3 GPU(s), 1 held (attach 1)", "unhealthy: GPU 2", "hotgpu health")
	gpus[2] = api.GPUStatus{Healthy: true, Grant: &ledger.Grant{Reason: ledger.Quarantine}}
	gpus[2].Index = 2
	expect(t, ledgerCheck(&api.Status{Held: 2}, gpus), Warn, "quarantined: GPU 2")
	expect(t, ledgerCheck(&api.Status{}, gpus[:1]), OK, "1 GPU(s), 0 held")
}

func TestRuntimeChecks(t *testing.T) {
	up := &api.Status{NRIConnected: true, CDISpec: "/var/run/cdi/hotgpu.yaml"}
	expect(t, find(t, runtimeChecks(up, t.TempDir()), StepRuntime, "nri"), OK, "connected")
	expect(t, find(t, runtimeChecks(up, t.TempDir()), StepRuntime, "cdi"), OK, "/var/run/cdi in cdi_spec_dirs (its defaults)")
	elsewhere := &api.Status{CDISpec: "/opt/cdi/hotgpu.yaml"}
	expect(t, find(t, runtimeChecks(elsewhere, t.TempDir()), StepRuntime, "cdi"), OK, "/opt/cdi in cdi_spec_dirs (not a default: add it)")
	down := &api.Status{}
	expect(t, find(t, runtimeChecks(down, t.TempDir()), StepRuntime, "nri"), Warn, "not connected")
	expect(t, find(t, runtimeChecks(down, t.TempDir()), StepRuntime, "cdi"), Warn, "no CDI spec")
}

func TestCgroupDriver(t *testing.T) {
	tests := []struct {
		name   string
		dirs   []string
		driver string
	}{
		{"kubelet, systemd", []string{"kubepods.slice/kubepods-besteffort.slice"}, "systemd"},
		{"containerd, systemd", []string{"system.slice/cri-containerd-0123abcd.scope"}, "systemd"},
		{"kubelet, cgroupfs", []string{"kubepods/besteffort"}, "cgroupfs"},
		{"containerd, cgroupfs", []string{"k8s.io/0123abcd"}, "cgroupfs"},
		{"nothing yet", []string{"system.slice/ssh.service"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range tt.dirs {
				must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
			}
			cs := cgroupChecks(root)
			c := find(t, cs, StepRuntime, "cgroup driver")
			switch tt.driver {
			case "systemd":
				expect(t, c, OK, "systemd (")
				expect(t, find(t, cs, StepRuntime, "daemon-reload"), Warn, "daemon-reload", "not yet", daemonReloadDoc)
			case "cgroupfs":
				expect(t, c, OK, "cgroupfs (", "live grants stay")
			default:
				expect(t, c, OK, "unknown", "no container cgroups")
			}
		})
	}
}

func TestRunSaysHotgpudSimulates(t *testing.T) {
	cfg := startHotgpud(t, "pcie8")
	r := Run(context.Background(), Config{Inventory: simulated(t, "dgxa100", nil), Socket: cfg.API.Socket, Daemon: api.NewClient(cfg.API.Socket), CDIDir: t.TempDir()})
	expect(t, find(t, r.Checks, StepHotgpud, "simulation"), Warn, "hotgpud simulates pcie8", "hotgpu doctor --simulate pcie8")
}
