package cdi

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
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
// control nodes, the driver's files and the hooks that link and register
// its libraries. A simulated inventory gets driver files only from a driver
// root the caller names (a fake one, in tests).
func (o *options) commonEdits(inv *gpu.Inventory) (specs.ContainerEdits, error) {
	var nodes []*specs.DeviceNode
	for _, n := range inv.Control {
		nodes = append(nodes, o.node(n))
	}
	if inv.Simulated != "" && !o.driverRootSet && o.driver == nil {
		return specs.ContainerEdits{DeviceNodes: nodes}, nil
	}
	edits, err := driverEdits(o.driver, o.driverRoot, o.hookPath, inv)
	edits.DeviceNodes = nodes
	return edits, err
}
