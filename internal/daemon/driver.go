package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hotgpu/hotgpu/hooks"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/mountns"
	"github.com/hotgpu/hotgpu/internal/policy"
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

// giveDriver gives a container that just got GPUs live the driver's
// user-space, unless it has it already (created with a GPU, or with the
// hotplug annotation): the GPU is given either way, and the answer says
// what was done or, when nothing could be (a read-only root), what to do.
func (d *Daemon) giveDriver(h ledger.Holder) string {
	e := d.DriverEdits()
	if e == nil {
		return ""
	}
	d.driverMu.Lock() // two attaches to one container mount each file once
	defer d.driverMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*hooks.DefaultLDCacheTimeout)
	defer cancel()
	n, cache, err := giveRunning(ctx, h.PID, e)
	log := d.log.WithFields(map[string]any{"container": h.String(), "files": n})
	if cache != nil {
		if rerr := d.attach.RecordCache(h.ContainerID, hooks.LDCachePath, cache.Mounted, cache.Made); rerr != nil {
			// unrecorded, it could not be undone at detach: undo it now
			if _, uerr := mountns.Undo(h.PID, hooks.LDCachePath, cache.Mounted, cache.Made); uerr != nil {
				rerr = errors.Join(rerr, uerr)
			}
			err = fmt.Errorf("failed to record the linker cache mounted over the container's %s: %w", hooks.LDCachePath, rerr)
		}
	}
	switch {
	case errors.Is(err, hooks.ErrNoLDConfig):
		log.WithError(err).Warn("driver files mounted; the linker cache not rebuilt")
		return fmt.Sprintf("driver files mounted into the container: %d, with their links, but %v; "+
			"set LD_LIBRARY_PATH=%s in it", n, err, strings.Join(e.LibraryDirs, ":"))
	case err != nil && n > 0:
		log.WithError(err).Warn("driver files mounted; the links or the linker cache not given")
		return fmt.Sprintf("driver files mounted into the container: %d, but %v; set LD_LIBRARY_PATH=%s in it",
			n, err, strings.Join(e.LibraryDirs, ":"))
	case err != nil:
		log.WithError(err).Warn("driver files not given to the container")
		return fmt.Sprintf("driver files not given (%v): CUDA in it needs them; create the container with the pod annotation %s: \"true\" "+
			"(read-only roots get them only at creation)", err, policy.HotplugAnnotation)
	case n == 0:
		return "driver files already in the container"
	}
	log.Info("driver files mounted into the running container")
	if cache != nil && cache.Made != (mountns.FileID{}) {
		return fmt.Sprintf("driver files mounted into the container: %d, with their links and a linker cache mounted at %s "+
			"(the container had none: an empty file made there to mount on; both go with its last GPU)", n, hooks.LDCachePath)
	}
	return fmt.Sprintf("driver files mounted into the container: %d, with their links and a linker cache mounted over its own %s "+
		"(left unchanged underneath; unmounted with its last GPU)", n, hooks.LDCachePath)
}

// giveRunning is hooks.GiveRunning; tests replace it.
var giveRunning = hooks.GiveRunning
