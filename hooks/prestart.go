package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/opencontainers/cgroups"
	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
)

// Prestart is the OCI hook for runtimes without NRI (runc under Docker,
// podman and CRI-O through hooks.d). Run at prestart or createRuntime (OCI
// status "creating"), it gives the container the GPUs it asks for by
// annotation or environment: it records them in hotgpud's ledger when
// hotgpud runs, opens the container's device cgroup to each one (never a
// wildcard) and creates the nodes inside the container's /dev. Run at
// poststop (status "stopped"), it releases what it recorded.
type Prestart struct {
	// AllowAll lets a container ask for every GPU ("all").
	AllowAll bool
	// Recorder is hotgpud's API; nil only in standalone mode.
	Recorder Recorder
	// Socket is where Recorder listens, named in the error when it is down.
	Socket string
	// Standalone lets the hook grant from Inventory, recording nothing, when
	// hotgpud does not answer. Off, the hook fails closed: a grant no
	// ledger knows about could hand a GPU a pod already holds.
	Standalone bool
	// Inventory finds the GPUs in standalone mode when hotgpud does not run.
	Inventory Inventory
	// DriverRoot is where a standalone hook finds the driver's files when
	// hotgpud does not run ("" gives none); hotgpud names them otherwise.
	DriverRoot string
	// Log gets one line per decision (the runtime keeps a hook's stderr).
	Log io.Writer
}

// NewPrestart returns the hook that records its grants in hotgpud's ledger
// through the API at socket and fails when hotgpud does not answer.
func NewPrestart(socket string, allowAll bool, log io.Writer) *Prestart {
	return &Prestart{AllowAll: allowAll, Log: log, Recorder: api.NewClient(socket), Socket: socket}
}

// NewStandalone returns the hook for nodes where it may work without
// hotgpud: it still records in hotgpud's ledger at socket when hotgpud
// answers (socket "" never asks), and otherwise grants from the kernel
// driver's procfs alone.
func NewStandalone(socket string, allowAll bool, log io.Writer) *Prestart {
	p := &Prestart{AllowAll: allowAll, Log: log, Standalone: true, Socket: socket, DriverRoot: "/",
		Inventory: procInventory{driverProc: DefaultDriverProc, procDevices: DefaultProcDevices}}
	if socket != "" {
		p.Recorder = api.NewClient(socket)
	}
	return p
}

// WithDriverProc reads GPUs from another driver procfs directory and
// /proc/devices file (tests, or a driver container's view).
func (p *Prestart) WithDriverProc(driverProc, procDevices string) *Prestart {
	p.Inventory = procInventory{driverProc: driverProc, procDevices: procDevices}
	return p
}

// Run reads the OCI state from stdin and acts on the container.
func (p *Prestart) Run(ctx context.Context, stdin io.Reader) error {
	c, err := readContainer(stdin)
	if err != nil {
		return err
	}
	switch c.state.Status {
	case oci.StateCreating, oci.StateCreated:
		return p.grant(ctx, c)
	case oci.StateStopped:
		return p.release(ctx, c.state.ID)
	}
	return nil // poststart and the like: nothing to do
}

func (p *Prestart) logf(format string, a ...any) {
	if p.Log != nil {
		fmt.Fprintf(p.Log, "hotgpu-hook: "+format+"\n", a...)
	}
}

func (p *Prestart) grant(ctx context.Context, c *container) error {
	if isKubernetes(&c.spec) {
		return nil // GPUs of pods come from kubelet or hotgpud's NRI plugin
	}
	req, err := requestOf(&c.spec, p.AllowAll)
	if err != nil {
		return err
	}
	if req.empty() {
		if req.deniedAll {
			p.logf("container %s: %s asks for all GPUs, not allowed here (--allow-all); giving none", c.state.ID, req.From)
		}
		return nil
	}
	if c.state.Pid <= 1 {
		return fmt.Errorf("OCI state of %q has no container pid: run hotgpu-hook at prestart or createRuntime", c.state.ID)
	}
	target, cgroupPath, err := targetOf(c.state.Pid)
	if err != nil {
		return err
	}
	res, recorded, err := p.reserve(ctx, c, req, cgroupPath)
	if err != nil {
		return err
	}
	gpus := res.GPUs
	err = mountDriver(ctx, c, target.PID, res.Driver)
	if err == nil {
		err = apply(c, target, gpus, res.Control)
	}
	if err != nil {
		if recorded {
			if rerr := p.Recorder.HookRelease(ctx, c.state.ID); rerr != nil {
				err = errors.Join(err, fmt.Errorf("failed to release the GPUs recorded in hotgpud (it releases them when the container is gone): %w", rerr))
			}
		}
		return err
	}
	p.logf("container %s: granted GPUs %v (%s, recorded in hotgpud: %t, driver files: %d)", c.state.ID, indices(gpus), req.From, recorded, driverFiles(res.Driver))
	return nil
}

// targetOf finds the container's cgroups from its init process, and the
// cgroup path to record (the hierarchy that holds its device rules).
func targetOf(pid int) (*hotplug.Target, string, error) {
	target, err := hotplug.TargetFromPID(pid)
	if err != nil {
		return nil, "", fmt.Errorf("failed to find the container's cgroup: %w", err)
	}
	paths, err := cgroups.ParseCgroupFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, "", fmt.Errorf("failed to read the container's cgroup: %w", err)
	}
	if target.DevicesDir != "" {
		return target, paths["devices"], nil
	}
	return target, paths[""], nil
}

// reserve asks hotgpud to record the GPUs, or, when it does not run and the
// hook is standalone, finds them in the driver's inventory. The answer
// names the GPUs, the control nodes and the driver's files.
func (p *Prestart) reserve(ctx context.Context, c *container, req gpuRequest, cgroupPath string) (res *api.HookReservation, recorded bool, err error) {
	if p.Recorder != nil {
		res, err := p.Recorder.HookReserve(ctx, api.HookReserveRequest{
			ContainerID: c.state.ID, PID: c.state.Pid, Cgroup: cgroupPath, IDs: req.IDs, All: req.All})
		switch {
		case err == nil && res.Driver != nil:
			if err := linkTargets(res.Driver); err != nil {
				return nil, false, fmt.Errorf("hotgpud named bad driver files: %w", err)
			}
			return res, true, nil
		case err == nil:
			return res, true, nil
		case !daemonDown(err):
			return nil, false, fmt.Errorf("hotgpud refused GPUs %s for container %s: %w", req, c.state.ID, err)
		case !p.Standalone:
			return nil, false, fmt.Errorf("hotgpud does not answer at %s (socket missing or stale), so GPUs %s for container %s "+
				"cannot be recorded in its ledger and are not granted: start hotgpud (systemctl start hotgpud) and create the container again, "+
				"or, on a node where hotgpud does not run, give hotgpu-hook prestart --standalone: %w", p.Socket, req, c.state.ID, err)
		}
		p.logf("hotgpud is not running; standalone: granting without recording in its ledger")
	}
	if !p.Standalone || p.Inventory == nil {
		return nil, false, errors.New("no GPU inventory: hotgpud is not configured and the hook is not standalone")
	}
	inv, err := p.Inventory.Inventory()
	if err != nil {
		return nil, false, err
	}
	res = &api.HookReservation{Control: inv.Control, Driver: p.standaloneDriver(inv.DriverVersion)}
	if req.All {
		res.GPUs = p.whole(inv.GPUs)
		return res, false, nil
	}
	found, err := inv.LookupAll(req.IDs)
	if err != nil {
		return nil, false, err
	}
	for _, g := range found {
		res.GPUs = append(res.GPUs, *g)
	}
	if err := wholeGPUs(res.GPUs); err != nil {
		return nil, false, err
	}
	return res, false, nil
}

// standaloneDriver finds the driver's files under DriverRoot for version
// (the kernel module's; "" lets the libraries tell). None found is logged,
// not fatal: the node may give them another way (NVIDIA's runtime).
func (p *Prestart) standaloneDriver(version string) *driver.Edits {
	if p.DriverRoot == "" {
		return nil
	}
	d, err := driver.Discover(p.DriverRoot, version)
	if err != nil {
		p.logf("no driver files given: %v", err)
		return nil
	}
	e := d.Edits()
	return &e
}

func driverFiles(e *driver.Edits) int {
	if e == nil {
		return 0
	}
	return len(e.Mounts)
}

// whole leaves the GPUs with MIG enabled out of "all": their CUDA runs
// only through MIG devices, which the hook does not grant.
func (p *Prestart) whole(gpus []gpu.GPU) []gpu.GPU {
	var out []gpu.GPU
	for _, g := range gpus {
		if err := wholeGPUs([]gpu.GPU{g}); err != nil {
			p.logf("left out of all: %v", err)
			continue
		}
		out = append(out, g)
	}
	return out
}

func (r gpuRequest) String() string {
	if r.All {
		return "all"
	}
	return fmt.Sprint(r.IDs)
}

// daemonDown tells "no hotgpud listens" (socket missing or stale) from a
// refusal, which must fail the container.
func daemonDown(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

func (p *Prestart) release(ctx context.Context, id string) error {
	if p.Recorder == nil {
		return nil
	}
	if err := p.Recorder.HookRelease(ctx, id); err != nil && !daemonDown(err) {
		return fmt.Errorf("failed to release the GPUs of container %s in hotgpud: %w", id, err)
	}
	return nil
}

func indices(gpus []gpu.GPU) []int {
	out := make([]int, len(gpus))
	for i, g := range gpus {
		out[i] = g.Index
	}
	return out
}
