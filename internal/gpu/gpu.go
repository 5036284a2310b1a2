// Package gpu is hotgpu's device model: the GPUs of a node, their MIG
// instances, the device nodes that give a container access to them and the
// topology between them. It is plain data with no I/O; internal/nvml fills it
// from NVML and everything else (CDI, the NRI plugin, the device plugin, live
// attach) reads it. It deliberately imports nothing outside the standard library.
package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// NvidiaMajor is the character-device major of /dev/nvidiaN and /dev/nvidiactl,
// fixed by the NVIDIA kernel driver.
const NvidiaMajor = 195

// NodeMode is the mode of the device nodes hotgpu creates in containers,
// as the NVIDIA driver makes them on the host: access is the device
// cgroup's decision, not the file mode's.
const NodeMode = 0o666

// ControlMinor is the minor of /dev/nvidiactl.
const ControlMinor = 255

// Inventory is everything hotgpu knows about a node's GPUs at one moment.
type Inventory struct {
	DriverVersion string `json:"driverVersion"`
	CUDAVersion   string `json:"cudaVersion"`
	// Simulated names the simulation preset when the inventory does not come
	// from a real driver ("" for real hardware).
	Simulated string `json:"simulated,omitempty"`
	GPUs      []GPU  `json:"gpus"`
	// Control holds the device nodes every GPU container needs besides its
	// GPUs: /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-uvm-tools (when
	// the nvidia-uvm module is loaded), /dev/nvidia-modeset (when present).
	Control []DeviceNode `json:"control"`
	// Problems says what the node lacks for containers to use its GPUs
	// (a kernel module not loaded, ...), each with its fix.
	Problems []string `json:"problems,omitempty"`
}

// GPU is one physical GPU or, when Instance is set, one MIG instance of it
// (see Inventory.Lookup): a device a container can hold on its own.
type GPU struct {
	Index     int    `json:"index"`
	Minor     int    `json:"minor"`
	UUID      string `json:"uuid"`
	PCIBusID  string `json:"pciBusID"`
	Name      string `json:"name"`
	MemoryMiB uint64 `json:"memoryMiB"`
	// MIGEnabled reports the current MIG mode; MIG lists its instances.
	MIGEnabled bool        `json:"migEnabled"`
	MIG        []MIGDevice `json:"mig,omitempty"`
	// Peers describes the link from this GPU to every other readable GPU.
	Peers []Peer `json:"peers,omitempty"`
	// Lost is set when NVML still counts the GPU but cannot read it (it
	// fell off the bus: GPU_IS_LOST, or answers Unknown Error): it holds
	// NVML's error. The record keeps what was known of the GPU; fields
	// NVML could not give are zero, Minor is -1 and UUID is a stand-in
	// (LostID) unless known. A lost GPU is always unhealthy, has no CDI
	// device and is never handed out.
	Lost string `json:"lost,omitempty"`
	// Instance is set on the record of one MIG instance, which Lookup and
	// ByUUID make from its parent's record: UUID is then the instance's,
	// ParentUUID the parent's, MIG and Peers are empty, and Nodes adds the
	// instance's capability nodes to the parent's node.
	Instance   *MIGDevice `json:"instance,omitempty"`
	ParentUUID string     `json:"parentUUID,omitempty"`
}

// LostID is the stand-in UUID of a lost GPU whose UUID NVML cannot read:
// by PCI bus id when that is readable, else by NVML index. It is never a
// real UUID (no "GPU-" prefix), so it cannot name a working GPU.
func LostID(busID string, index int) string {
	if busID != "" {
		return "lost-pci-" + busID
	}
	return "lost-index-" + strconv.Itoa(index)
}

// MIGDevice is one MIG compute instance (GPU instance GI, compute instance CI).
type MIGDevice struct {
	Parent    int    `json:"parent"` // index of the parent GPU
	Index     int    `json:"index"`  // position among the parent's MIG devices
	GI        int    `json:"gi"`
	CI        int    `json:"ci"`
	UUID      string `json:"uuid"`
	Profile   string `json:"profile"`
	MemoryMiB uint64 `json:"memoryMiB"`
	// Caps are the /dev/nvidia-caps nodes that grant access to this instance
	// (its GPU instance and compute instance capabilities).
	Caps []DeviceNode `json:"caps"`
}

// Name returns the MIG device's name "<gpu index>:<mig index>", the form
// nvidia-ctk and the device plugin use for CDI device names.
func (m MIGDevice) Name() string { return fmt.Sprintf("%d:%d", m.Parent, m.Index) }

// Link is the kind of connection between two GPUs, best first.
type Link int

// PCIe levels follow NVML's GPU_TOPOLOGY_* (nvidia-smi topo -m) ordering.
const (
	LinkSame       Link = iota // the same board (multi-GPU board)
	LinkPCIeSwitch             // PIX: one PCIe switch
	LinkPCIeMulti              // PXB: several PCIe switches
	LinkHostBridge             // PHB: the CPU's host bridge
	LinkNUMANode               // NODE: across host bridges within a NUMA node
	LinkSystem                 // SYS: across NUMA nodes (SMP interconnect)
)

var linkNames = [...]string{"BOARD", "PIX", "PXB", "PHB", "NODE", "SYS"}

func (l Link) String() string {
	if l >= 0 && int(l) < len(linkNames) {
		return linkNames[l]
	}
	return "UNKNOWN"
}

// Peer is this GPU's connection to another GPU.
type Peer struct {
	Index   int  `json:"index"`
	NVLinks int  `json:"nvlinks"` // active NVLink lanes between the two
	PCIe    Link `json:"pcie"`
}

// DeviceNode is a character device a container needs.
type DeviceNode struct {
	Path  string `json:"path"`
	Major int64  `json:"major"`
	Minor int64  `json:"minor"`
}

// Rule returns the cgroup device rule for the node, e.g. "c 195:0 rwm".
// It never produces a wildcard.
func (d DeviceNode) Rule() string { return fmt.Sprintf("c %d:%d rwm", d.Major, d.Minor) }

// Node returns the device node of the GPU (/dev/nvidiaN, N = device minor).
func (g GPU) Node() DeviceNode {
	return DeviceNode{Path: "/dev/nvidia" + strconv.Itoa(g.Minor), Major: NvidiaMajor, Minor: int64(g.Minor)}
}

// Peer returns the link from g to the GPU with index other.
func (g GPU) Peer(other int) (Peer, bool) {
	for _, p := range g.Peers {
		if p.Index == other {
			return p, true
		}
	}
	return Peer{}, false
}

// ErrNoSuchGPU is what Lookup's errors wrap (errors.Is).
var ErrNoSuchGPU = errors.New("no such GPU")

// noSuchGPU keeps Lookup's message and classifies it as ErrNoSuchGPU.
type noSuchGPU struct{ msg string }

func (e *noSuchGPU) Error() string { return e.msg }
func (e *noSuchGPU) Unwrap() error { return ErrNoSuchGPU }

// Lookup finds a GPU by index ("3") or UUID ("GPU-…"), as users and kubelet
// name them. The error says which GPUs exist.
func (inv *Inventory) Lookup(id string) (*GPU, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return nil, fmt.Errorf("empty GPU id")
	}
	if parent, _, isMIG := strings.Cut(id, ":"); isMIG || hasMIGPrefix(id) {
		if g, ok := inv.instance(id); ok {
			return g, nil
		}
		if isMIG {
			return nil, &noSuchGPU{fmt.Sprintf("GPU %s has no MIG device %s (see hotgpu ls)", parent, id)}
		}
		return nil, &noSuchGPU{fmt.Sprintf("MIG device %q does not exist on this node", id)}
	}
	if n, err := strconv.Atoi(id); err == nil {
		for i := range inv.GPUs {
			if inv.GPUs[i].Index == n {
				return &inv.GPUs[i], nil
			}
		}
		return nil, &noSuchGPU{fmt.Sprintf("GPU %d does not exist (this node has %d GPUs, 0-%d)", n, len(inv.GPUs), len(inv.GPUs)-1)}
	}
	for i := range inv.GPUs {
		if strings.EqualFold(inv.GPUs[i].UUID, id) {
			return &inv.GPUs[i], nil
		}
	}
	return nil, &noSuchGPU{fmt.Sprintf("GPU %q does not exist on this node", id)}
}

// LookupAll looks up every id (see Lookup). One device named twice, even as
// its index and its UUID, is an error: it would be handed out twice. So are
// a GPU and one of its MIG instances: they share the hardware.
func (inv *Inventory) LookupAll(ids []string) ([]*GPU, error) {
	out := make([]*GPU, 0, len(ids))
	named := map[string]string{} // device name -> the id that named it (a UUID may be unknown)
	for _, id := range ids {
		g, err := inv.Lookup(id)
		if err != nil {
			return nil, err
		}
		id = strings.TrimSpace(id)
		if first, dup := named[g.ID()]; dup {
			return nil, fmt.Errorf("GPU %s named twice (%q and %q)", g.ID(), first, id)
		}
		for _, other := range out {
			if other.Index == g.Index && (other.Instance == nil || g.Instance == nil) {
				return nil, fmt.Errorf("GPU %d and its MIG device named together (%q and %q): they share the GPU", g.Index, named[other.ID()], id)
			}
		}
		named[g.ID()] = id
		out = append(out, g)
	}
	return out, nil
}

// ByUUID returns the GPU, or the record of the MIG instance, with the
// given UUID.
func (inv *Inventory) ByUUID(uuid string) (*GPU, bool) {
	for i := range inv.GPUs {
		if inv.GPUs[i].UUID == uuid {
			return &inv.GPUs[i], true
		}
	}
	if hasMIGPrefix(uuid) {
		return inv.instance(uuid)
	}
	return nil, false
}
