package nvml

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

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
// entries fall back to the Simulated* constants; on real hardware a missing
// nvidia-uvm is an error, because containers cannot run CUDA without it.
func (p *Provider) majors() (majors, error) {
	table, err := readProcDevices(p.opts.procDevices)
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
	if m.uvm == 0 {
		return majors{}, fmt.Errorf("failed to find the nvidia-uvm major in %s: the nvidia-uvm kernel module is not loaded; load it with 'modprobe nvidia-uvm' (or 'nvidia-modprobe -u -c=0')", p.opts.procDevices)
	}
	return m, nil
}

func readProcDevices(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read device majors: %w", err)
	}
	defer f.Close()
	table, err := parseProcDevices(f)
	if err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return table, nil
}

// parseProcDevices returns the character-device majors by driver name. Block
// devices are ignored: a block driver can share a name with a char driver.
func parseProcDevices(r io.Reader) (map[string]int64, error) {
	table := map[string]int64{}
	inChar := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasSuffix(line, ":"):
			inChar = line == "Character devices:"
			continue
		case !inChar:
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		major, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed major in line %q", line)
		}
		if _, seen := table[fields[1]]; !seen {
			table[fields[1]] = major
		}
	}
	return table, sc.Err()
}

// controlNodes are the nodes every CUDA process opens besides its GPUs.
func controlNodes(uvmMajor int64) []gpu.DeviceNode {
	return []gpu.DeviceNode{
		{Path: "/dev/nvidiactl", Major: gpu.NvidiaMajor, Minor: gpu.ControlMinor},
		{Path: "/dev/nvidia-uvm", Major: uvmMajor, Minor: 0},
		{Path: "/dev/nvidia-uvm-tools", Major: uvmMajor, Minor: 1},
	}
}
