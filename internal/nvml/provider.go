package nvml

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml/sim"
)

// Sim is the simulated node a Provider made WithSimulate reads (see package
// internal/nvml/sim).
type Sim = sim.Sim

// Provider reads the node's GPUs through NVML, real or simulated. It is safe
// for concurrent use: calls are serialised because NVML handles (and the mock
// server) are not meant to be walked by several goroutines at once.
type Provider struct {
	mu   sync.Mutex
	opts options
	lib  nvml.Interface
	sim  *sim.Sim       // nil on real hardware
	last *gpu.Inventory // the last inventory read (see reader.known)
	// uvmTried is set once nvidia-modprobe was tried for a missing
	// nvidia-uvm; uvmErr is why it did not load it.
	uvmTried bool
	uvmErr   error
	closed   bool
}

// New loads NVML (or builds the simulation) and initialises it. Call Close
// when done.
func New(opts ...Option) (*Provider, error) {
	p := &Provider{opts: defaultOptions()}
	for _, opt := range opts {
		if err := opt(&p.opts); err != nil {
			return nil, fmt.Errorf("failed to configure NVML provider: %w", err)
		}
	}
	if p.opts.simulate != "" {
		s, err := sim.New(p.opts.simulate, &p.mu, giProfileName)
		if err != nil {
			return nil, err
		}
		p.sim, p.lib = s, s.Library()
	} else {
		lib, err := loadLibrary(p.opts.driverRoot)
		if err != nil {
			return nil, err
		}
		p.lib = lib
	}
	if err := p.init(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Provider) init() error {
	ret := p.lib.Init()
	switch {
	case ret == nvml.SUCCESS:
		return nil
	case ret == nvml.ERROR_LIBRARY_NOT_FOUND:
		return missingError(p.opts.driverRoot, nil)
	case ret == nvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("failed to initialise NVML: %w: load it (modprobe nvidia; after a driver upgrade, reload all NVIDIA modules or reboot) or, to run without a GPU, use --simulate dgxa100", ErrDriverNotLoaded)
	case ret == nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return fmt.Errorf("failed to initialise NVML: %w: the driver was upgraded but the old kernel module is still loaded; reload the NVIDIA kernel modules (stop what uses the GPUs, then rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia and modprobe nvidia) or reboot the node", ErrVersionMismatch)
	default:
		return fmt.Errorf("failed to initialise NVML: %w", check(ret, "initialise NVML"))
	}
}

// Inventory reports the node's GPUs as they are now.
func (p *Provider) Inventory() (*gpu.Inventory, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	majors, err := p.majors()
	if err != nil {
		return nil, err
	}
	r := reader{lib: p.lib, majors: majors, migMinors: p.migMinorTable, known: p.last}
	inv, err := r.inventory()
	if err != nil {
		return nil, err
	}
	p.last = inv
	inv.Simulated = p.opts.simulate
	inv.Control = p.controlNodes(majors.uvm)
	if problem := p.uvmProblem(majors); problem != "" {
		inv.Problems = append(inv.Problems, problem)
	}
	return inv, nil
}

// Simulation returns the handle that changes the simulated node, or nil when
// the Provider reads real hardware.
func (p *Provider) Simulation() *sim.Sim { return p.sim }

// Close shuts NVML down. Further calls to Inventory fail with ErrClosed.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if ret := p.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("failed to shut NVML down: %w", check(ret, "shut down NVML"))
	}
	return nil
}

// migMinorTable returns where MIG capability minors come from: the driver's
// table on a real host, the driver's fixed layout in simulation.
func (p *Provider) migMinorTable() (migMinors, error) {
	if p.sim != nil {
		return driverLayoutMinors{}, nil
	}
	t, err := readMIGMinors(p.opts.migMinors)
	if err != nil {
		return nil, fmt.Errorf("failed to read MIG capability minors: %w: is the nvidia-caps support of the driver loaded?", err)
	}
	return t, nil
}

// Processes returns the pids the driver reports running on the GPU (compute
// and graphics contexts): a holder that /proc cannot show, such as a
// process in a PID namespace hotgpud cannot read. The simulation runs
// nothing on its GPUs and answers none.
func (p *Provider) Processes(uuid string) ([]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.sim != nil {
		return nil, nil
	}
	d, ret := p.lib.DeviceGetHandleByUUID(uuid)
	if err := check(ret, "get GPU %s", uuid); err != nil {
		return nil, err
	}
	var pids []int
	for _, list := range []func() ([]nvml.ProcessInfo, nvml.Return){d.GetComputeRunningProcesses, d.GetGraphicsRunningProcesses} {
		infos, ret := list()
		if err := check(ret, "list the processes on GPU %s", uuid); err != nil {
			return nil, err
		}
		for _, info := range infos {
			pids = append(pids, int(info.Pid))
		}
	}
	return pids, nil
}
