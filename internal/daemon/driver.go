package daemon

import (
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// usesDriverRoot reports whether containers get the driver's files from
// the driver root. A simulated node has no driver of its own; a driver
// root other than the host's ("/") is used like a real one, so the library
// mounts and hooks run end to end against a fake driver root.
func (d *Daemon) usesDriverRoot() bool {
	return d.cfg.Simulate == "" || (d.cfg.DriverRoot != "" && d.cfg.DriverRoot != "/")
}

// discoverDriver finds the driver's user-space of inv's driver version and
// keeps it for every path that gives containers GPUs (the CDI spec, the
// NRI plugin); nil, without error, when the node has none to give.
func (d *Daemon) discoverDriver(inv *gpu.Inventory) (*driver.Driver, error) {
	if !d.usesDriverRoot() {
		d.driver.Store(nil)
		return nil, nil
	}
	drv, err := driver.Discover(d.cfg.DriverRoot, inv.DriverVersion)
	if err != nil {
		return nil, err
	}
	d.driver.Store(drv)
	return drv, nil
}

// DriverEdits implements plugin.Driver: the driver's files and the hooks
// that finish them in a container, the same the CDI spec carries; nil
// when the node has none to give.
func (d *Daemon) DriverEdits() *driver.Edits {
	drv := d.driver.Load()
	if drv == nil {
		return nil
	}
	e := drv.Edits()
	return &e
}
