package cdi

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"

	"github.com/hotgpu/hotgpu/internal/hookenv"
)

// ErrNoGPUs means the inventory has no GPU to describe; a CDI spec needs at
// least one device.
var ErrNoGPUs = errors.New("no GPUs in the inventory")

// AllDevice is the name of the device that stands for every GPU.
const AllDevice = "all"

// Generate builds the CDI spec for inv. Devices are named by index ("0"),
// by UUID, MIG devices by "<gpu>:<mig>" and by MIG UUID, and "all". Each
// device node carries its type and numbers, so the runtime never has to stat
// a host node (there may be none on a simulated node).
func Generate(inv *gpu.Inventory, opts ...Option) (*specs.Spec, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("failed to configure CDI spec generation: %w", err)
		}
	}
	if inv == nil || len(inv.GPUs) == 0 {
		return nil, fmt.Errorf("failed to generate CDI spec: %w: check that the driver sees the GPUs (nvidia-smi), or use --simulate dgxa100", ErrNoGPUs)
	}
	common, err := o.commonEdits(inv)
	if err != nil {
		return nil, fmt.Errorf("failed to generate CDI spec: %w", err)
	}
	spec := &specs.Spec{
		Kind:           o.vendor + "/" + o.class,
		Devices:        o.devices(inv),
		ContainerEdits: common,
	}
	// The lowest version the content needs: runtimes refuse specs that
	// declare a version newer than the CDI library they bundle.
	if spec.Version, err = specs.MinimumRequiredVersion(spec); err != nil {
		return nil, fmt.Errorf("failed to determine the CDI version of the spec: %w", err)
	}
	return spec, nil
}

func (o *options) devices(inv *gpu.Inventory) []specs.Device {
	var byIndex, byUUID, mig []specs.Device
	var all []*specs.DeviceNode
	for _, g := range inv.GPUs {
		if g.Lost != "" {
			// No device for a GPU NVML cannot read: a request for it fails
			// at the runtime, and "all" works. The others keep their names.
			continue
		}
		byIndex = append(byIndex, o.device(strconv.Itoa(g.Index), g.Node()))
		byUUID = append(byUUID, o.device(g.UUID, g.Node()))
		all = append(all, o.node(g.Node()))
		for _, m := range g.MIG {
			// The parent node plus the MIG device's capability nodes.
			nodes := append([]gpu.DeviceNode{g.Node()}, m.Caps...)
			mig = append(mig, o.device(m.Name(), nodes...), o.device(m.UUID, nodes...))
			for _, c := range m.Caps {
				all = append(all, o.node(c))
			}
		}
	}
	devices := append(append(byIndex, byUUID...), mig...)
	return append(devices, specs.Device{Name: AllDevice, ContainerEdits: specs.ContainerEdits{DeviceNodes: all}})
}

func (o *options) device(name string, nodes ...gpu.DeviceNode) specs.Device {
	d := specs.Device{Name: name}
	for _, n := range nodes {
		d.ContainerEdits.DeviceNodes = append(d.ContainerEdits.DeviceNodes, o.node(n))
	}
	return d
}

// node returns a fresh spec node each time: the CDI library fills in missing
// fields of the nodes it applies, so devices must not share them.
func (o *options) node(n gpu.DeviceNode) *specs.DeviceNode {
	sn := &specs.DeviceNode{Path: n.Path, Type: "c", Major: n.Major, Minor: n.Minor}
	if o.devRoot != "/" {
		sn.HostPath = filepath.Join(o.devRoot, n.Path)
	}
	return sn
}

// commonEdits are what every GPU container gets once, whichever GPUs it has:
// control nodes, driver files and the linker-cache hook.
func (o *options) commonEdits(inv *gpu.Inventory) (specs.ContainerEdits, error) {
	var edits specs.ContainerEdits
	for _, n := range inv.Control {
		edits.DeviceNodes = append(edits.DeviceNodes, o.node(n))
	}
	if inv.Simulated != "" && !o.driverRootSet {
		return edits, nil // a simulated node has no driver files to mount
	}
	files, err := findDriverFiles(o.driverRoot)
	if err != nil {
		return edits, err
	}
	edits.Mounts = files.mounts(o.driverRoot)
	if len(files.libDirs) > 0 {
		edits.Hooks = []*specs.Hook{o.ldcacheHook(files.libDirs)}
	}
	return edits, nil
}

// LDCacheHookTimeout is the runtime's limit, in seconds, on the spec's
// update-ldcache hook.
const LDCacheHookTimeout = 10

// ldcacheHook makes the runtime refresh the container's linker cache so the
// mounted libraries are found wherever the image's ld.so.conf points.
func (o *options) ldcacheHook(dirs []string) *specs.Hook {
	args := []string{filepath.Base(o.hookPath), "update-ldcache"}
	for _, d := range dirs {
		args = append(args, "--folder", d)
	}
	// The hook's own environment: without it runtimes pass theirs, and the
	// hook re-executes itself to get this one at every container start.
	// A bound on the hook: the runtime kills it rather than hang container
	// creation (the hook stops itself earlier, hooks.DefaultLDCacheTimeout).
	timeout := LDCacheHookTimeout
	return &specs.Hook{HookName: "createContainer", Path: o.hookPath, Args: args, Env: hookenv.Env, Timeout: &timeout}
}
