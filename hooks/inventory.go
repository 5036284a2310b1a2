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
// which is NVML's (and nvidia-smi's) default enumeration order.
type procInventory struct {
	driverProc  string // /proc/driver/nvidia
	procDevices string // /proc/devices
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
	for i, bus := range busIDs {
		g, err := readGPUInfo(filepath.Join(p.driverProc, "gpus", bus, "information"))
		if err != nil {
			return nil, err
		}
		g.Index, g.PCIBusID = i, bus
		inv.GPUs = append(inv.GPUs, g)
	}
	inv.Control, err = controlNodes(p.procDevices)
	return inv, err
}

// readGPUInfo parses a driver "information" file ("Key: \t value" lines).
func readGPUInfo(path string) (gpu.GPU, error) {
	f, err := os.Open(path)
	if err != nil {
		return gpu.GPU{}, fmt.Errorf("failed to read GPU information: %w", err)
	}
	defer f.Close()
	var g gpu.GPU
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
			g.UUID = v
		case "Device Minor":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < gpu.ControlMinor {
				minor = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return gpu.GPU{}, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if minor < 0 {
		return gpu.GPU{}, fmt.Errorf("failed to read %s: no valid \"Device Minor\" line", path)
	}
	g.Minor = minor
	return g, nil
}

// controlNodes are /dev/nvidiactl and, when the nvidia-uvm module is loaded,
// /dev/nvidia-uvm and /dev/nvidia-uvm-tools (a dynamic major, from
// /proc/devices).
func controlNodes(procDevices string) ([]gpu.DeviceNode, error) {
	nodes := []gpu.DeviceNode{{Path: "/dev/nvidiactl", Major: gpu.NvidiaMajor, Minor: gpu.ControlMinor}}
	f, err := os.Open(procDevices)
	if err != nil {
		return nil, fmt.Errorf("failed to read device majors: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[1] == "nvidia-uvm" {
			major, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil || major <= 0 || major > 0xfff {
				return nil, fmt.Errorf("failed to parse %s: bad nvidia-uvm major %q", procDevices, fields[0])
			}
			nodes = append(nodes,
				gpu.DeviceNode{Path: "/dev/nvidia-uvm", Major: major, Minor: 0},
				gpu.DeviceNode{Path: "/dev/nvidia-uvm-tools", Major: major, Minor: 1})
			break
		}
	}
	return nodes, sc.Err()
}
