//go:build cgo

package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

func init() {
	register(&command{Name: "cdi", Summary: "generate or list the CDI spec of this node's GPUs", Run: runCDI})
}

const cdiUsage = `hotgpu cdi describes this node's GPUs as a Container Device Interface spec,
the file containerd, CRI-O, Docker and podman read to inject devices
(ctr run --device nvidia.com/gpu=0, nerdctl run --device nvidia.com/gpu=all).

Usage:
  hotgpu cdi <command> [flags]

Commands:
%s
Run 'hotgpu cdi <command> --help' for flags and examples.
`

var cdiCommands = []*command{
	{Name: "generate", Summary: "print or write the CDI spec", Run: runCDIGenerate},
	{Name: "list", Summary: "list the CDI device names (nvidia.com/gpu=0 ...)", Run: runCDIList},
}

func runCDI(ctx context.Context, s stdio, args []string) error {
	return dispatch(ctx, s, "hotgpu cdi", cdiUsage, cdiCommands, args)
}

// specFlags are the flags that decide what the spec contains.
type specFlags struct {
	simulate, driverRoot, devRoot string
	vendor, class, hookPath       string
}

func (f *specFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.simulate, "simulate", "", "read a simulated node instead of NVML: "+strings.Join(nvml.Presets(), " or "))
	fs.StringVar(&f.driverRoot, "driver-root", "", "root the NVIDIA driver is installed under (default /; /run/nvidia/driver with a driver container)")
	fs.StringVar(&f.devRoot, "dev-root", "/", "root under which the host's /dev is found")
	fs.StringVar(&f.vendor, "vendor", cdi.DefaultVendor, "vendor part of the device names")
	fs.StringVar(&f.class, "class", cdi.DefaultClass, "class part of the device names")
	fs.StringVar(&f.hookPath, "hook-path", cdi.DefaultHookPath, "host path of hotgpu-hook, run to make the libraries' links and update the container's linker cache")
}

// spec reads the inventory and builds the spec.
func (f *specFlags) spec() (*specs.Spec, error) {
	opts := []cdi.Option{cdi.WithVendor(f.vendor), cdi.WithClass(f.class), cdi.WithDevRoot(f.devRoot), cdi.WithHookPath(f.hookPath)}
	if f.driverRoot != "" {
		opts = append(opts, cdi.WithDriverRoot(f.driverRoot))
	}
	inv, err := f.inventory()
	if err != nil {
		return nil, err
	}
	return cdi.Generate(inv, opts...)
}

// inventory reads the GPUs from NVML, or from the simulated node.
func (f *specFlags) inventory() (*gpu.Inventory, error) {
	var nvmlOpts []nvml.Option
	if f.simulate == "" || f.devRoot != "/" { // a simulated node has no /dev of the host's
		nvmlOpts = append(nvmlOpts, nvml.WithDevRoot(f.devRoot))
	}
	if f.simulate != "" {
		nvmlOpts = append(nvmlOpts, nvml.WithSimulate(f.simulate))
	}
	if f.driverRoot != "" {
		nvmlOpts = append(nvmlOpts, nvml.WithDriverRoot(f.driverRoot))
	}
	p, err := nvml.New(nvmlOpts...)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Inventory()
}

const generateUsage = `Print or write the CDI spec of this node's GPUs: devices 0..N-1, each GPU's
UUID, MIG devices <gpu>:<mig> and all, with the control device nodes, the
driver's libraries of its version, tools, firmware and daemon sockets, and the
hooks that make the libraries' SONAME links and update the linker cache.

Usage:
  hotgpu cdi generate [flags]

Examples:
  # print the spec of a simulated DGX A100 (no GPU needed)
  hotgpu cdi generate --simulate dgxa100

  # install the spec where containerd looks (written atomically; hotgpud, when
  # it runs, keeps the same file, /var/run/cdi/hotgpu.yaml, up to date itself)
  hotgpu cdi generate --output /var/run/cdi/hotgpu.yaml

  # the same with a driver container and the host's /dev mounted at /host
  hotgpu cdi generate --driver-root /run/nvidia/driver --dev-root /host --output /var/run/cdi
`

func runCDIGenerate(_ context.Context, s stdio, args []string) error {
	var f specFlags
	fs := newFlagSet("hotgpu cdi generate", generateUsage)
	f.register(fs)
	output := fs.String("output", "-", "where to write the spec: - for stdout, a file, or a spec directory (file hotgpu.<format>, hotgpud's)")
	formatFlag := fs.String("format", "", "yaml or json (default: from the --output file name, else yaml)")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	dir, name, format, err := outputPath(*output, *formatFlag)
	if err != nil {
		return err
	}
	spec, err := f.spec()
	if err != nil {
		return err
	}
	if *output == "-" {
		data, err := cdi.Encode(spec, format)
		if err != nil {
			return err
		}
		_, err = s.out.Write(data)
		return err
	}
	if name == "" {
		name = cdi.SpecFile(format)
	}
	path, err := cdi.Write(spec, dir, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "wrote CDI spec %s with %d devices to %s\n", spec.Kind, len(spec.Devices), path)
	return nil
}

// outputPath splits --output into a directory and a file name ("" for the
// conventional name) and settles the format. An existing directory means
// "write into it"; a file name's extension and --format must agree.
func outputPath(output, format string) (dir, name, resolved string, err error) {
	if format != "" && format != cdi.FormatYAML && format != cdi.FormatJSON {
		return "", "", "", usageErrorf("unknown --format %q: use yaml or json", format)
	}
	if info, statErr := os.Stat(output); output == "-" || (statErr == nil && info.IsDir()) {
		return output, "", cmp.Or(format, cdi.FormatYAML), nil
	}
	dir, name = filepath.Split(output)
	switch ext := strings.TrimPrefix(filepath.Ext(name), "."); {
	case ext != cdi.FormatYAML && ext != cdi.FormatJSON:
		format = cmp.Or(format, cdi.FormatYAML)
		name += "." + format // runtimes only read .yaml and .json specs
	case format != "" && ext != format:
		return "", "", "", usageErrorf("--output %s does not match --format %s", output, format)
	default:
		format = ext
	}
	return cmp.Or(dir, "."), name, format, nil
}

const listUsage = `List the fully qualified CDI device names of this node's GPUs, one per line,
as they are passed to --device or requested in a CDI annotation.

Usage:
  hotgpu cdi list [flags]

Examples:
  hotgpu cdi list
  hotgpu cdi list --simulate pcie8
`

func runCDIList(_ context.Context, s stdio, args []string) error {
	var f specFlags
	fs := newFlagSet("hotgpu cdi list", listUsage)
	f.register(fs)
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	spec, err := f.spec()
	if err != nil {
		return err
	}
	for _, name := range cdi.DeviceNames(spec) {
		fmt.Fprintln(s.out, name)
	}
	return nil
}
