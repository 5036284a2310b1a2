package doctor

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

const driverStep step = StepDriver

// Kernel device names in /proc/devices.
const (
	procNvidia         = "nvidia"
	procNvidiaFrontend = "nvidia-frontend" // older drivers' name for major 195
	procUVM            = "nvidia-uvm"
)

// driverChecks reads what NVML gave (inv, or why it could not) and the
// kernel's view: the majors in procDevices and the nodes under devRoot,
// each left out when "" (a simulated node has no kernel driver of its own).
func driverChecks(inv *gpu.Inventory, invErr error, procDevices, devRoot string) []Check {
	var out []Check
	if invErr != nil {
		out = append(out, driverStep.fail("nvml", invErr.Error(),
			"load the NVIDIA driver until 'nvidia-smi' lists the GPUs (on a node without GPUs, try --simulate dgxa100)"))
	} else {
		out = append(out, driverStep.ok("nvml", inventorySummary(inv)))
		for _, g := range inv.GPUs {
			out = append(out, gpuCheck(g))
		}
		for _, p := range inv.Problems {
			if procDevices != "" && strings.Contains(p, procUVM) {
				continue // the /proc/devices check says it, with the fix
			}
			out = append(out, driverStep.warn("driver problem", p, "see the message"))
		}
	}
	if procDevices == "" && devRoot == "" {
		return append(out, driverStep.skip("kernel", "a simulated node: the host's /proc/devices and /dev say nothing about it (give --dev-root to check a fake /dev)"))
	}
	if procDevices != "" {
		majors, err := gpu.ReadCharMajors(procDevices)
		if err != nil {
			return append(out, driverStep.fail("kernel", err.Error(), "run doctor on the host, with /proc mounted"))
		}
		out = append(out, kernelChecks(majors, procDevices)...) // also when NVML failed: is the module even loaded?
	}
	if devRoot != "" && inv != nil {
		out = append(out, nodeChecks(inv, devRoot)...)
	}
	return out
}

func inventorySummary(inv *gpu.Inventory) string {
	s := fmt.Sprintf("NVML loaded: driver %s, CUDA %s, %d GPU(s)", inv.DriverVersion, inv.CUDAVersion, len(inv.GPUs))
	if inv.Simulated != "" {
		s += " (simulated " + inv.Simulated + ")"
	}
	return s
}

func gpuCheck(g gpu.GPU) Check {
	name := "gpu " + strconv.Itoa(g.Index)
	if g.Lost != "" {
		return driverStep.fail(name, fmt.Sprintf("LOST (PCI %s, UUID %s): %s", g.PCIBusID, g.UUID, g.Lost),
			"the GPU fell off the bus: look for Xid 79 in 'dmesg', then reset it ('nvidia-smi -r -i "+strconv.Itoa(g.Index)+"') or reboot; hotgpu hands it to no one meanwhile")
	}
	mig := "MIG off"
	if g.MIGEnabled {
		mig = fmt.Sprintf("MIG on, %d instance(s)", len(g.MIG))
	}
	return driverStep.ok(name, fmt.Sprintf("%s, minor %d, %s, PCI %s, %s", g.Name, g.Minor, g.UUID, g.PCIBusID, mig))
}

// kernelChecks: the driver's majors as the kernel registered them.
func kernelChecks(majors map[string]int64, path string) []Check {
	var out []Check
	m, ok := majors[procNvidia]
	if !ok {
		m, ok = majors[procNvidiaFrontend]
	}
	switch {
	case !ok:
		out = append(out, driverStep.fail("kernel module nvidia", "no nvidia in "+path+": the kernel driver is not loaded",
			"load it ('modprobe nvidia', or install the driver); 'nvidia-smi' must work on the host"))
	case m != gpu.NvidiaMajor:
		out = append(out, driverStep.fail("kernel module nvidia", fmt.Sprintf("major %d in %s, not %d", m, path, gpu.NvidiaMajor),
			"this is not NVIDIA's kernel driver as hotgpu knows it: report it"))
	default:
		out = append(out, driverStep.ok("kernel module nvidia", fmt.Sprintf("major %d", m)))
	}
	if u, ok := majors[procUVM]; ok {
		out = append(out, driverStep.ok("kernel module nvidia-uvm", fmt.Sprintf("major %d", u)))
	} else {
		out = append(out, driverStep.warn("kernel module nvidia-uvm", "no nvidia-uvm in "+path+": containers get no /dev/nvidia-uvm and CUDA fails in them",
			"load it with 'nvidia-modprobe -u -c=0' (or 'modprobe nvidia-uvm'); hotgpud picks it up"))
	}
	return out
}

// nodeChecks compares the host's /dev/nvidia* with the numbers NVML and
// the kernel gave: one line per wrong or missing node, one for the rest.
func nodeChecks(inv *gpu.Inventory, devRoot string) []Check {
	var want []gpu.DeviceNode
	for _, g := range inv.GPUs {
		if g.Lost != "" {
			continue
		}
		want = append(want, g.Node())
		for _, m := range g.MIG {
			want = append(want, m.Caps...)
		}
	}
	want = append(want, inv.Control...)
	var out []Check
	good := 0
	for _, n := range want {
		if c, bad := nodeCheck(n, devRoot); bad {
			out = append(out, c)
		} else {
			good++
		}
	}
	return append(out, driverStep.ok("device nodes", fmt.Sprintf("%d of %d nodes under %s match the driver's numbers", good, len(want), filepath.Join(devRoot, "dev"))))
}

func nodeCheck(n gpu.DeviceNode, devRoot string) (Check, bool) {
	path := filepath.Join(devRoot, n.Path)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return driverStep.warn(n.Path, fmt.Sprintf("missing on the host (%v); containers get theirs from hotgpu, but host tools need it", err),
			"make it with 'nvidia-modprobe -c=<minor>' (running 'nvidia-smi' once also does)"), true
	}
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || major != n.Major || minor != n.Minor {
		return driverStep.fail(n.Path, fmt.Sprintf("is not the character device %d:%d the driver reports (mode %o, %d:%d)", n.Major, n.Minor, st.Mode&unix.S_IFMT, major, minor),
			"remove the stale node and let 'nvidia-modprobe' make it again (or reboot)"), true
	}
	return Check{}, false
}
