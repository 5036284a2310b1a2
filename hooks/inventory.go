package hooks

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Default locations of what the NVIDIA kernel driver publishes about its
// GPUs; the hook reads them when hotgpud is not running.
const (
	DefaultDriverProc  = "/proc/driver/nvidia"
	DefaultProcDevices = "/proc/devices"
)

// procInventory reads the GPUs from the kernel driver's procfs instead of
// NVML: the hook must work without hotgpud and must not load the driver's
// user-space library into a root process. Indices follow PCI bus order,
// which is NVML's (and nvidia-smi's) default enumeration order; GPUs the
// driver excludes (NVreg_ExcludedGpus: "GPU Excluded: Yes") are not
// enumerated by NVML and are left out. A UUID the driver has not read yet
// ("GPU-????????-...", before the GPU is first initialised) is unknown: the
// GPU is kept with an empty UUID and can be named by index only.
type procInventory struct {
	driverProc  string // /proc/driver/nvidia
	procDevices string // /proc/devices
	devRoot     string // where the host's /dev is ("" or "/": the host's)
}

// gpuInfo is what the driver's "information" file says of one GPU.
type gpuInfo struct {
	gpu.GPU
	excluded bool
}

func (p procInventory) Inventory() (*gpu.Inventory, error) {
	dirs, err := os.ReadDir(filepath.Join(p.driverProc, "gpus"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no NVIDIA driver: %s/gpus does not exist (load the nvidia kernel module, or run hotgpud)", p.driverProc)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list GPUs: %w", err)
	}
	busIDs := make([]string, 0, len(dirs))
	for _, d := range dirs {
		busIDs = append(busIDs, d.Name())
	}
	sort.Strings(busIDs)
	inv := &gpu.Inventory{}
	for _, bus := range busIDs {
		info, err := readGPUInfo(filepath.Join(p.driverProc, "gpus", bus, "information"))
		if err != nil {
			return nil, err
		}
		if info.excluded {
			continue
		}
		g := info.GPU
		g.Index, g.PCIBusID = len(inv.GPUs), bus
		if g.MIGEnabled, err = p.migEnabled(g.Minor); err != nil {
			return nil, err
		}
		inv.GPUs = append(inv.GPUs, g)
	}
	if inv.Control, err = controlNodes(p.procDevices); err != nil {
		return nil, err
	}
	if p.hasNode("nvidia-modeset") {
		inv.Control = append(inv.Control, gpu.DeviceNode{Path: "/dev/nvidia-modeset", Major: gpu.NvidiaMajor, Minor: modesetMinor})
	}
	inv.DriverVersion = p.driverVersion()
	return inv, nil
}

// driverVersion is the kernel module's version, the one the user-space
// libraries must match, from the driver's "version" file ("NVRM version:
// NVIDIA UNIX x86_64 Kernel Module  580.95.05  ..."); "" when it does not
// say.
func (p procInventory) driverVersion() string {
	data, err := os.ReadFile(filepath.Join(p.driverProc, "version"))
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	_, rest, ok := strings.Cut(line, "Kernel Module")
	if !ok {
		return ""
	}
	if f := strings.Fields(rest); len(f) > 0 {
		return f[0]
	}
	return ""
}

// modesetMinor is the minor of /dev/nvidia-modeset, fixed by the driver.
const modesetMinor = 254

// hasNode reports whether the host has /dev/<name>.
func (p procInventory) hasNode(name string) bool {
	root := p.devRoot
	if root == "" {
		root = "/"
	}
	_, err := os.Stat(filepath.Join(root, "dev", name))
	return err == nil
}

// migEnabled reports whether the GPU with this minor has MIG instances: the
// driver then publishes their capabilities under
// capabilities/gpu<minor>/mig/gi<N>. A MIG-enabled GPU cannot run CUDA as a
// whole GPU.
func (p procInventory) migEnabled(minor int) (bool, error) {
	dir := filepath.Join(p.driverProc, "capabilities", "gpu"+strconv.Itoa(minor), "mig")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to read the MIG state of the GPU with minor %d: %w", minor, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "gi") {
			return true, nil
		}
	}
	return false, nil
}

// ErrMIGEnabled is what wholeGPUs refuses a MIG-enabled GPU with.
var ErrMIGEnabled = errors.New("MIG is enabled on the GPU")

// wholeGPUs refuses GPUs that cannot be granted as whole GPUs: a GPU in
// MIG mode runs CUDA only through its MIG devices (their /dev/nvidia-caps
// nodes), which the hook does not grant.
func wholeGPUs(gpus []gpu.GPU) error {
	for _, g := range gpus {
		if g.MIGEnabled {
			return fmt.Errorf("GPU %d (%s): %w: it cannot be given as a whole GPU; ask for its MIG devices through hotgpud, or disable MIG (nvidia-smi -i %d -mig 0)", g.Index, g.PCIBusID, ErrMIGEnabled, g.Index)
		}
	}
	return nil
}

// readGPUInfo parses a driver "information" file ("Key: \t value" lines).
func readGPUInfo(path string) (gpuInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return gpuInfo{}, fmt.Errorf("failed to read GPU information: %w", err)
	}
	defer f.Close()
	var g gpuInfo
	minor := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Model":
			g.Name = v
		case "GPU UUID":
			if !strings.Contains(v, "?") { // "GPU-????????-...": not read yet
				g.UUID = v
			}
		case "Device Minor":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < modesetMinor {
				minor = n
			}
		case "GPU Excluded":
			g.excluded = strings.EqualFold(v, "Yes")
		}
	}
	if err := sc.Err(); err != nil {
		return gpuInfo{}, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if minor < 0 && !g.excluded {
		return gpuInfo{}, fmt.Errorf("failed to read %s: no valid \"Device Minor\" line", path)
	}
	g.Minor = minor
	return g, nil
}

// controlNodes are /dev/nvidiactl and, when the nvidia-uvm module is loaded,
// /dev/nvidia-uvm and /dev/nvidia-uvm-tools (a dynamic major, from
// /proc/devices).
func controlNodes(procDevices string) ([]gpu.DeviceNode, error) {
	nodes := []gpu.DeviceNode{{Path: "/dev/nvidiactl", Major: gpu.NvidiaMajor, Minor: gpu.ControlMinor}}
	majors, err := gpu.ReadCharMajors(procDevices)
	if err != nil {
		return nil, err
	}
	if major, ok := majors["nvidia-uvm"]; ok {
		nodes = append(nodes,
			gpu.DeviceNode{Path: "/dev/nvidia-uvm", Major: major, Minor: 0},
			gpu.DeviceNode{Path: "/dev/nvidia-uvm-tools", Major: major, Minor: 1})
	}
	return nodes, nil
}
