package daemon

import (
	"fmt"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// writeCDI regenerates the CDI spec from inv and replaces the file
// atomically, so runtimes never read a half-written spec.
// The driver's files are found here, with the inventory, for every path.
func (d *Daemon) writeCDI(inv *gpu.Inventory) error {
	drv, err := d.discoverDriver(inv)
	if d.cfg.CDI.Disabled {
		if err != nil {
			d.log.WithError(err).Error("no driver libraries for containers given GPUs by annotation")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to generate CDI spec: %w", err)
	}
	spec, err := d.cdiSpec(inv, drv)
	if err != nil {
		return err
	}
	path, err := cdi.Write(spec, d.cfg.CDI.Dir, cdi.SpecFile(cdi.FormatYAML))
	if err != nil {
		return err
	}
	d.cdiPath.Store(path)
	d.log.WithFields(map[string]any{"path": path, "devices": len(spec.Devices)}).Info("CDI spec written")
	return nil
}

// cdiSpec is the node's CDI spec for inv, with the driver's files drv
// (nil: none found).
func (d *Daemon) cdiSpec(inv *gpu.Inventory, drv *driver.Driver) (*specs.Spec, error) {
	opts := []cdi.Option{
		cdi.WithVendor(d.cfg.CDI.Vendor), cdi.WithClass(d.cfg.CDI.Class), cdi.WithHookPath(d.cfg.HookPath),
	}
	if drv != nil {
		opts = append(opts, cdi.WithDriver(drv))
	}
	if d.cfg.DevRoot != "" {
		opts = append(opts, cdi.WithDevRoot(d.cfg.DevRoot))
	}
	spec, err := cdi.Generate(inv, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to generate CDI spec: %w", err)
	}
	return spec, nil
}
