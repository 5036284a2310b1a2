package gpu

import (
	"slices"
	"strconv"
	"strings"
)

// A MIG instance is a device of its own: a container holds it without its
// parent, and the parent's other instances go to other containers. The one
// rule every path that hands out devices follows (see Overlapping): a GPU is
// busy while any of its instances is held, and an instance is busy while
// its parent is held.

// hasMIGPrefix reports whether id is a MIG UUID ("MIG-…").
func hasMIGPrefix(id string) bool { return len(id) > 4 && strings.EqualFold(id[:4], "MIG-") }

// ID is how users name the device: "3" for a GPU, "3:1" for its MIG
// device 1 (the CDI device names).
func (g GPU) ID() string {
	if g.Instance != nil {
		return g.Instance.Name()
	}
	return strconv.Itoa(g.Index)
}

// Nodes are the device nodes the device needs, besides the control nodes:
// the GPU's node and, for a MIG instance, its capability nodes. Access to
// the parent's node alone gives no access to any instance: the driver
// checks the capability nodes.
func (g GPU) Nodes() []DeviceNode {
	nodes := []DeviceNode{g.Node()}
	if g.Instance != nil {
		nodes = append(nodes, g.Instance.Caps...)
	}
	return nodes
}

// Instances lists the records of the node's MIG instances (see
// GPU.Instance), of one profile ("1g.5gb") or of every profile (""), in
// GPU then MIG device order.
func (inv *Inventory) Instances(profile string) []*GPU {
	var out []*GPU
	for i := range inv.GPUs {
		for _, m := range inv.GPUs[i].MIG {
			if profile == "" || m.Profile == profile {
				out = append(out, instanceRecord(&inv.GPUs[i], m))
			}
		}
	}
	return out
}

// Overlapping lists the UUIDs of the devices that share hardware with the
// device uuid names: a MIG instance's parent, a GPU's MIG instances. A
// device hotgpu does not know overlaps nothing.
func (inv *Inventory) Overlapping(uuid string) []string {
	if inv == nil {
		return nil
	}
	for i := range inv.GPUs {
		g := &inv.GPUs[i]
		if g.UUID == uuid {
			out := make([]string, 0, len(g.MIG))
			for _, m := range g.MIG {
				out = append(out, m.UUID)
			}
			return out
		}
		for _, m := range g.MIG {
			if m.UUID == uuid {
				return []string{g.UUID}
			}
		}
	}
	return nil
}

// instance finds a MIG device by name ("0:1") or MIG UUID.
func (inv *Inventory) instance(id string) (*GPU, bool) {
	for i := range inv.GPUs {
		for _, m := range inv.GPUs[i].MIG {
			if m.Name() == id || strings.EqualFold(m.UUID, id) {
				return instanceRecord(&inv.GPUs[i], m), true
			}
		}
	}
	return nil, false
}

func instanceRecord(parent *GPU, m MIGDevice) *GPU {
	g := *parent
	g.UUID, g.ParentUUID, g.MemoryMiB = m.UUID, parent.UUID, m.MemoryMiB
	g.MIG, g.Peers = nil, nil
	g.Instance = &m
	return &g
}

// AppendNodes appends the device's Nodes that nodes does not hold yet: two
// MIG instances of one GPU share its node, which a container gets once.
func AppendNodes(nodes []DeviceNode, g GPU) []DeviceNode {
	for _, n := range g.Nodes() {
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	return nodes
}
