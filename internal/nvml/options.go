package nvml

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/hotgpu/hotgpu/internal/nvml/sim"
)

// Option configures a Provider.
type Option func(*options) error

type options struct {
	driverRoot  string
	simulate    string
	procDevices string
	migMinors   string
	devRoot     string // where the host's /dev is; "" for "/" (none in simulation)
	modprobe    string // nvidia-modprobe; "" to look for it
}

func defaultOptions() options {
	return options{
		driverRoot:  "/",
		procDevices: "/proc/devices",
		migMinors:   "/proc/driver/nvidia-caps/mig-minors",
	}
}

// WithDriverRoot sets the root the NVIDIA driver is installed under (default
// "/"); libnvidia-ml.so.1 is searched in the usual library directories below
// it. Use it when the driver lives in a container, e.g. /run/nvidia/driver.
func WithDriverRoot(dir string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("driver root %q must be an absolute path", dir)
		}
		o.driverRoot = filepath.Clean(dir)
		return nil
	}
}

// WithSimulate replaces the driver with a simulated node (package
// internal/nvml/sim) built from a preset (see Presets). No GPU, driver or
// library is needed.
func WithSimulate(preset string) Option {
	return func(o *options) error {
		if !slices.Contains(Presets(), preset) {
			return fmt.Errorf("unknown simulation preset %q: use one of %v", preset, Presets())
		}
		o.simulate = preset
		return nil
	}
}

// WithProcDevices reads the character-device majors from path instead of
// /proc/devices (tests use it to pin nvidia-uvm and nvidia-caps majors).
func WithProcDevices(path string) Option {
	return func(o *options) error {
		o.procDevices = path
		return nil
	}
}

// WithMIGMinors reads MIG capability minors from path instead of
// /proc/driver/nvidia-caps/mig-minors. It has no effect in simulation.
func WithMIGMinors(path string) Option {
	return func(o *options) error {
		o.migMinors = path
		return nil
	}
}

// WithDevRoot sets the root the host's /dev is found under (default "/";
// a simulated node has none unless given),
// as cdi.WithDevRoot: control nodes that exist only on some hosts
// (/dev/nvidia-modeset) are listed when DIR/dev has them.
func WithDevRoot(dir string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("dev root %q must be an absolute path", dir)
		}
		o.devRoot = filepath.Clean(dir)
		return nil
	}
}

// WithModprobe sets the nvidia-modprobe binary used to load a missing
// nvidia-uvm module (default: found under the driver root, then in PATH).
func WithModprobe(path string) Option {
	return func(o *options) error {
		o.modprobe = path
		return nil
	}
}

// Presets lists the simulation presets WithSimulate accepts.
func Presets() []string { return sim.Presets() }
