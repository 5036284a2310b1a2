package cdi

import (
	"fmt"
	"path/filepath"

	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/hotgpu/hotgpu/internal/driver"
)

// Defaults for Generate.
const (
	DefaultVendor   = "nvidia.com"
	DefaultClass    = "gpu"
	DefaultHookPath = "/usr/local/bin/hotgpu-hook"
)

// Option configures Generate.
type Option func(*options) error

type options struct {
	vendor, class string
	driverRoot    string
	// driverRootSet records an explicit driver root: simulated inventories
	// only get libraries when the caller points at some.
	driverRootSet bool
	devRoot       string
	hookPath      string
	// driver, when set, is the driver already found (WithDriver).
	driver *driver.Driver
}

func defaultOptions() options {
	return options{
		vendor:     DefaultVendor,
		class:      DefaultClass,
		driverRoot: "/",
		devRoot:    "/",
		hookPath:   DefaultHookPath,
	}
}

// WithVendor sets the vendor part of device names (default nvidia.com).
func WithVendor(vendor string) Option {
	return func(o *options) error {
		if err := parser.ValidateVendorName(vendor); err != nil {
			return fmt.Errorf("invalid CDI vendor %q: %w", vendor, err)
		}
		o.vendor = vendor
		return nil
	}
}

// WithClass sets the class part of device names (default gpu).
func WithClass(class string) Option {
	return func(o *options) error {
		if err := parser.ValidateClassName(class); err != nil {
			return fmt.Errorf("invalid CDI class %q: %w", class, err)
		}
		o.class = class
		return nil
	}
}

// WithDriverRoot sets where the driver's user-space files live on the host
// (default "/"; /run/nvidia/driver with a driver container).
func WithDriverRoot(dir string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("driver root %q must be an absolute path", dir)
		}
		o.driverRoot, o.driverRootSet = filepath.Clean(dir), true
		return nil
	}
}

// WithDevRoot sets where /dev lives on the host (default "/"); host paths of
// device nodes are prefixed with it, container paths are not.
func WithDevRoot(dir string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("dev root %q must be an absolute path", dir)
		}
		o.devRoot = filepath.Clean(dir)
		return nil
	}
}

// WithHookPath sets the host path of hotgpu-hook, which the spec runs to
// update the container's linker cache.
func WithHookPath(path string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("hook path %q must be an absolute path", path)
		}
		o.hookPath = path
		return nil
	}
}

// WithDriver gives the driver's user-space already found for the
// inventory's version (hotgpud finds it once for every path that gives
// containers GPUs), so the spec carries the same files as the others.
func WithDriver(d *driver.Driver) Option {
	return func(o *options) error {
		if d == nil {
			return fmt.Errorf("WithDriver needs a driver found by driver.Discover")
		}
		o.driver = d
		return nil
	}
}
