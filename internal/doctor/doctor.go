package doctor

import (
	"context"
	"path/filepath"
	"time"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Defaults of Config's paths.
const (
	DefaultCDIDir      = "/var/run/cdi"
	DefaultProcDevices = "/proc/devices"
	DefaultCgroupRoot  = "/sys/fs/cgroup"
)

// Config says what to check and where.
type Config struct {
	// Inventory is what NVML reads (cmd/hotgpu runs its cgo helper);
	// InventoryErr is why it could not, when it could not.
	Inventory    *gpu.Inventory
	InventoryErr error
	// Simulate names the simulated node asked for ("" for NVML's): the
	// host's kernel says nothing about it, even when it could not be read.
	Simulate string
	// Socket is hotgpud's API socket; Daemon talks to it.
	Socket string
	Daemon Daemon
	// DriverRoot is where the driver's user-space is ("/" unless a driver
	// container's); set means given on the command line.
	DriverRoot    string
	DriverRootSet bool
	// DevRoot is where the host's /dev is ("/"). A simulated node's nodes
	// are checked only when DevRootSet (a fake /dev), its majors only when
	// ProcDevices is set (a fake /proc/devices).
	DevRoot    string
	DevRootSet bool
	// CDIDir is where to look for hotgpud's spec when hotgpud does not say.
	CDIDir      string
	HookPath    string
	ProcDevices string
	CgroupRoot  string
	// AttachTest runs step 5 with the sandbox started as SandboxArgv.
	AttachTest  bool
	SandboxArgv []string
}

func (c *Config) defaults() {
	for _, d := range []struct {
		p *string
		v string
	}{
		{&c.DriverRoot, "/"}, {&c.DevRoot, "/"}, {&c.CDIDir, DefaultCDIDir}, {&c.HookPath, cdi.DefaultHookPath},
		{&c.CgroupRoot, DefaultCgroupRoot},
	} {
		if *d.p == "" {
			*d.p = d.v
		}
	}
}

// Run checks the node, step by step. Later steps use what earlier ones
// found: hotgpud's spec path for the CDI step, its GPUs for the attach test.
func Run(ctx context.Context, cfg Config) *Report {
	onHost := cfg.Simulate == "" && (cfg.Inventory == nil || cfg.Inventory.Simulated == "")
	procDevices, devRoot := cfg.ProcDevices, cfg.DevRoot
	if procDevices == "" && onHost {
		procDevices = DefaultProcDevices
	}
	if devRoot == "" {
		devRoot = "/"
	}
	if !onHost && !cfg.DevRootSet {
		devRoot = ""
	}
	cfg.defaults()
	r := &Report{}
	r.add(driverChecks(cfg.Inventory, cfg.InventoryErr, procDevices, devRoot)...)

	st, gpus, daemonChecks := hotgpudChecks(ctx, cfg.Socket, cfg.Daemon, time.Now())
	specPath := filepath.Join(cfg.CDIDir, cdi.SpecFile(cdi.FormatYAML))
	if st != nil && st.CDISpec != "" {
		specPath = st.CDISpec
	}
	r.add(cdiChecks(specPath, cfg.Inventory, cfg.DriverRoot, cfg.cdiOptions())...)
	r.add(runtimeChecks(st, cfg.CgroupRoot)...)
	r.add(daemonChecks...)
	if st != nil && st.Simulated != "" && (cfg.Inventory == nil || cfg.Inventory.Simulated != st.Simulated) {
		r.add(hotgpudStep.warn("simulation", "hotgpud simulates "+st.Simulated+"; the driver and CDI steps read another node",
			"check the node hotgpud serves: hotgpu doctor --simulate "+st.Simulated))
	}
	if cfg.AttachTest {
		d := cfg.Daemon
		if st == nil {
			d = nil
		}
		r.add(attachTest(ctx, d, gpus, cfg.SandboxArgv, cfg.CgroupRoot)...)
	}
	return r
}

// cdiOptions make the spec hotgpud would write with these roots.
func (c *Config) cdiOptions() []cdi.Option {
	opts := []cdi.Option{cdi.WithDevRoot(c.DevRoot), cdi.WithHookPath(c.HookPath)}
	if c.DriverRootSet || c.Inventory == nil || c.Inventory.Simulated == "" {
		opts = append(opts, cdi.WithDriverRoot(c.DriverRoot))
	}
	return opts
}
