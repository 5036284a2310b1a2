package plugin

import (
	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/driver"
)

// Driver gives the driver's user-space every GPU container gets, the same
// edits the CDI spec carries.
type Driver interface {
	// DriverEdits returns nil when the node has none to give (a simulated
	// node without a driver root).
	DriverEdits() *driver.Edits
}

// WithDriver makes containers given GPUs by annotation or by the
// visible-devices env get the driver's files, their links and linker
// cache, through hotgpu-hook at hookPath.
func WithDriver(d Driver, hookPath string) Option {
	return func(p *Plugin) error { p.driver, p.hookPath = d, hookPath; return nil }
}

// addDriver adds the driver's files as read-only bind mounts, skipping
// paths the container already mounts (its own choice wins), and the
// createContainer hooks that make the SONAME links and refresh the linker
// cache: they run in the container's mount namespace before a read-only
// root is made read-only. It reports whether there was a driver to add.
func (p *Plugin) addDriver(adj *api.ContainerAdjustment, c *api.Container) bool {
	if p.driver == nil {
		return false
	}
	e := p.driver.DriverEdits()
	if e == nil {
		return false
	}
	have := map[string]bool{}
	for _, m := range c.GetMounts() {
		have[m.GetDestination()] = true
	}
	for _, m := range e.Mounts {
		if have[m.ContainerPath] {
			continue
		}
		adj.AddMount(&api.Mount{Destination: m.ContainerPath, Type: "bind", Source: m.HostPath, Options: m.Options})
	}
	hooks := &api.Hooks{}
	for _, h := range e.Hooks(p.hookPath) {
		hooks.CreateContainer = append(hooks.CreateContainer, &api.Hook{
			Path: h.Path, Args: h.Args, Env: h.Env, Timeout: &api.OptionalInt{Value: driver.HookTimeout},
		})
	}
	if len(hooks.CreateContainer) > 0 {
		adj.AddHooks(hooks)
	}
	return true
}
