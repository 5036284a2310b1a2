package nvml

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Majors used in simulation when /proc/devices has no NVIDIA entries (a host
// without the driver). They are the top of the dynamic range Linux hands out
// first (511 downwards), which is what real hosts usually get, so simulated
// specs look like real ones. They are never used for real hardware.
const (
	SimulatedUVMMajor  = 511
	SimulatedCapsMajor = 510
)

const (
	uvmDevice  = "nvidia-uvm"
	capsDevice = "nvidia-caps"
)

// majors holds the dynamic majors of the NVIDIA modules; 0 means absent.
type majors struct {
	uvm  int64
	caps int64
}

// majors reads /proc/devices (or the configured file). In simulation missing
// entries fall back to the Simulated* constants. On real hardware a missing
// nvidia-uvm is loaded with nvidia-modprobe when it is there (once per
// Provider); when it stays missing the majors say so (uvm 0) and
// uvmProblem tells the user how to fix it: hotgpud still starts.
func (p *Provider) majors() (majors, error) {
	table, err := gpu.ReadCharMajors(p.opts.procDevices)
	if err != nil && p.sim == nil {
		return majors{}, err
	}
	m := majors{uvm: table[uvmDevice], caps: table[capsDevice]}
	if p.sim != nil {
		if m.uvm == 0 {
			m.uvm = SimulatedUVMMajor
		}
		if m.caps == 0 {
			m.caps = SimulatedCapsMajor
		}
		return m, nil
	}
	if m.uvm == 0 && !p.uvmTried {
		p.uvmTried = true
		if p.uvmErr = p.loadUVM(); p.uvmErr == nil {
			if table, err = gpu.ReadCharMajors(p.opts.procDevices); err != nil {
				return majors{}, err
			}
			m = majors{uvm: table[uvmDevice], caps: table[capsDevice]}
		}
	}
	return m, nil
}

// errNoModprobe means nvidia-modprobe is not installed.
var errNoModprobe = errors.New("nvidia-modprobe not found")

// loadUVM runs `nvidia-modprobe -u -c=0`, which loads nvidia-uvm and makes
// /dev/nvidia-uvm and /dev/nvidia-uvm-tools, as NVIDIA's container stack does.
func (p *Provider) loadUVM() error {
	path := p.opts.modprobe
	if path == "" {
		path = findModprobe(p.opts.driverRoot)
	}
	if path == "" {
		return errNoModprobe
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, "-u", "-c=0").CombinedOutput(); err != nil {
		return fmt.Errorf("%s -u -c=0: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findModprobe looks for nvidia-modprobe under the driver root, then in PATH.
func findModprobe(driverRoot string) string {
	for _, dir := range []string{"usr/bin", "usr/sbin", "bin", "sbin"} {
		path := filepath.Join(driverRoot, dir, "nvidia-modprobe")
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path
		}
	}
	if path, err := exec.LookPath("nvidia-modprobe"); err == nil {
		return path
	}
	return ""
}

// uvmProblem says what a node without nvidia-uvm lacks and how to fix it;
// "" when the module is loaded.
func (p *Provider) uvmProblem(m majors) string {
	if m.uvm != 0 {
		return ""
	}
	msg := fmt.Sprintf("the nvidia-uvm kernel module is not loaded (no nvidia-uvm in %s): containers get no /dev/nvidia-uvm and CUDA fails in them; load it with 'nvidia-modprobe -u -c=0' (or 'modprobe nvidia-uvm'), then hotgpud picks it up", p.opts.procDevices)
	if p.uvmErr != nil {
		msg += " (loading it failed: " + p.uvmErr.Error() + ")"
	}
	return msg
}

// modesetMinor is the minor of /dev/nvidia-modeset, fixed by the driver.
const modesetMinor = 254

// controlNodes are the nodes every CUDA process opens besides its GPUs:
// nvidiactl, nvidia-uvm and nvidia-uvm-tools when the module is loaded, and
// nvidia-modeset where the host has it (it exists only where nvidia-modeset
// is loaded, e.g. for display or Vulkan; NVIDIA's CDI spec includes it then).
func (p *Provider) controlNodes(uvmMajor int64) []gpu.DeviceNode {
	nodes := []gpu.DeviceNode{{Path: "/dev/nvidiactl", Major: gpu.NvidiaMajor, Minor: gpu.ControlMinor}}
	if uvmMajor != 0 {
		nodes = append(nodes,
			gpu.DeviceNode{Path: "/dev/nvidia-uvm", Major: uvmMajor, Minor: 0},
			gpu.DeviceNode{Path: "/dev/nvidia-uvm-tools", Major: uvmMajor, Minor: 1})
	}
	root := p.opts.devRoot
	if root == "" && p.sim == nil {
		root = "/"
	}
	// A simulated node looks at a dev root only when one is given: the
	// host's own /dev says nothing about it.
	if _, err := os.Stat(filepath.Join(root, "dev", "nvidia-modeset")); root != "" && err == nil {
		nodes = append(nodes, gpu.DeviceNode{Path: "/dev/nvidia-modeset", Major: gpu.NvidiaMajor, Minor: modesetMinor})
	}
	return nodes
}
