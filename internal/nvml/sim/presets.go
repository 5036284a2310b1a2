package sim

import (
	"fmt"
	"slices"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
)

// preset describes a simulated node. Everything is indexed by slot, the
// GPU's position in the complete node, so topology does not shift when a
// simulated GPU is removed.
type preset struct {
	config gpus.Config
	busIDs []string // sysfs form, one per slot
	// pcie is the PCIe common-ancestor level between two different slots.
	pcie func(a, b int) nvml.GpuTopologyLevel
	// linkSlots is how many NVLinks the GPU model has; links are the enabled
	// ones, in link order.
	linkSlots int
	links     func(slot int) []simLink
}

// simLink is one enabled NVLink and what sits at its other end.
type simLink struct {
	kind   nvml.IntNvLinkDeviceType
	remote string // PCI bus id of the remote end
}

var presets = map[string]*preset{
	// dgxa100: a DGX A100. Every GPU has 12 NVLinks, two to each of six
	// NVSwitches, so every pair of GPUs talks over 12 links. On PCIe, pairs
	// share a switch tree (PXB), GPUs 0-3 and 4-7 each sit on one CPU (NODE)
	// and cross-CPU traffic is SYS.
	"dgxa100": {
		config:    gpus.A100_SXM4_40GB,
		busIDs:    busIDs(0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd),
		pcie:      tiered(nvml.TOPOLOGY_MULTIPLE, nvml.TOPOLOGY_NODE, nvml.TOPOLOGY_NODE),
		linkSlots: 12,
		links: func(int) []simLink {
			links := make([]simLink, 12)
			for i := range links {
				remote := fmt.Sprintf("0000:%02x:00.0", 0xc4+i/2)
				links[i] = simLink{kind: nvml.NVLINK_DEVICE_TYPE_SWITCH, remote: remote}
			}
			return links
		},
	},
	// pcie8: eight PCIe A100s with no uniform topology, for topology-aware
	// allocation tests. NVLink bridges (4 links) join only the pairs (0,1),
	// (2,3), (4,5), (6,7). On PCIe a pair shares a switch (PIX); pairs in
	// GPUs 0-3 share a switch tree (PXB) while pairs in GPUs 4-7 only share a
	// NUMA node (NODE); across the halves it is SYS.
	"pcie8": {
		config:    gpus.A100_PCIE_40GB,
		busIDs:    pcie8Buses,
		pcie:      tiered(nvml.TOPOLOGY_SINGLE, nvml.TOPOLOGY_MULTIPLE, nvml.TOPOLOGY_NODE),
		linkSlots: 12,
		links: func(slot int) []simLink {
			link := simLink{kind: nvml.NVLINK_DEVICE_TYPE_GPU, remote: pcie8Buses[slot^1]}
			return []simLink{link, link, link, link}
		},
	},
}

var pcie8Buses = busIDs(0x1b, 0x1c, 0x3d, 0x3e, 0x88, 0x89, 0xb1, 0xb2)

// Presets lists the simulation presets New accepts.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for name := range presets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// tiered builds an 8-GPU PCIe layout: pair is the level inside a pair of
// slots, low and high the level between pairs inside slots 0-3 and 4-7,
// and SYS across the two halves.
func tiered(pair, low, high nvml.GpuTopologyLevel) func(a, b int) nvml.GpuTopologyLevel {
	return func(a, b int) nvml.GpuTopologyLevel {
		switch {
		case a/2 == b/2:
			return pair
		case a/4 != b/4:
			return nvml.TOPOLOGY_SYSTEM
		case a < 4:
			return low
		default:
			return high
		}
	}
}

func busIDs(buses ...int) []string {
	ids := make([]string, len(buses))
	for i, b := range buses {
		ids[i] = fmt.Sprintf("0000:%02x:00.0", b)
	}
	return ids
}

// pciInfo builds what NVML reports for a bus id (NVML uses an 8-digit domain).
func pciInfo(busID string, deviceID uint32) nvml.PciInfo {
	info := nvml.PciInfo{PciDeviceId: deviceID}
	fmt.Sscanf(busID, "%x:%x:%x", &info.Domain, &info.Bus, &info.Device)
	copyCString(info.BusIdLegacy[:], strings.ToUpper(busID))
	copyCString(info.BusId[:], "0000"+strings.ToUpper(busID))
	return info
}

func copyCString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}
