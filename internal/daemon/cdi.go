package daemon

import (
	"fmt"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// writeCDI regenerates the CDI spec from inv and replaces the file
// atomically, so runtimes never read a half-written spec.
func (d *Daemon) writeCDI(inv *gpu.Inventory) error {
	if d.cfg.CDI.Disabled {
		return nil
	}
	opts := []cdi.Option{
		cdi.WithVendor(d.cfg.CDI.Vendor), cdi.WithClass(d.cfg.CDI.Class), cdi.WithHookPath(d.cfg.HookPath),
	}
	// A simulated node has no driver of its own; a driver root other than
	// the host's ("/") is used like a real one, so the library mounts and
	// hooks run end to end against a fake driver root.
	if d.cfg.Simulate == "" || (d.cfg.DriverRoot != "" && d.cfg.DriverRoot != "/") {
		opts = append(opts, cdi.WithDriverRoot(d.cfg.DriverRoot))
	}
	if d.cfg.DevRoot != "" {
		opts = append(opts, cdi.WithDevRoot(d.cfg.DevRoot))
	}
	spec, err := cdi.Generate(inv, opts...)
	if err != nil {
		return fmt.Errorf("failed to generate CDI spec: %w", err)
	}
	path, err := cdi.Write(spec, d.cfg.CDI.Dir, cdi.SpecFile(cdi.FormatYAML))
	if err != nil {
		return err
	}
	d.cdiPath.Store(path)
	d.log.WithFields(map[string]any{"path": path, "devices": len(spec.Devices)}).Info("CDI spec written")
	return nil
}
