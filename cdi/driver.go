package cdi

import (
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// ErrNoDriverLibraries means no driver library of the inventory's driver
// version was found under the driver root.
var ErrNoDriverLibraries = driver.ErrNoDriverLibraries

// HookTimeout is the runtime's limit, in seconds, on each of the spec's
// hooks.
const HookTimeout = driver.HookTimeout

// driverEdits are the driver's user-space as CDI edits: package driver's
// mounts, and its createContainer hooks (SONAME links, then the linker
// cache) run through hotgpu-hook at hookPath. d is the driver found for
// the inventory's version, or nil to find it under root here. At least one
// library of the driver's version must exist: a spec without them would
// give containers device nodes they cannot use.
func driverEdits(d *driver.Driver, root, hookPath string, inv *gpu.Inventory) (specs.ContainerEdits, error) {
	var edits specs.ContainerEdits
	if d == nil {
		var err error
		if d, err = driver.Discover(root, inv.DriverVersion); err != nil {
			return edits, err
		}
	}
	e := d.Edits()
	for _, m := range e.Mounts {
		edits.Mounts = append(edits.Mounts, &specs.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, Options: m.Options})
	}
	// The hooks carry hotgpu-hook's own environment: without it runtimes
	// pass theirs, and the hook re-executes itself to get this one at
	// every container start. Each is bounded: the runtime kills it rather
	// than hang container creation (the hook stops itself earlier,
	// hooks.DefaultLDCacheTimeout).
	for _, h := range e.Hooks(hookPath) {
		timeout := HookTimeout
		edits.Hooks = append(edits.Hooks, &specs.Hook{HookName: "createContainer", Path: h.Path, Args: h.Args, Env: h.Env, Timeout: &timeout})
	}
	return edits, nil
}
