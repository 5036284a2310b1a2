package attach

import (
	"slices"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// The ledger remembers each node hotgpu made in a container (inode and
// filesystem) with the grant it was made for; detach, rollback and crash
// recovery remove only those, and only while they are still that inode. A
// GPU's own node is recorded with its grant; control nodes, which belong to
// every GPU the container got by attach, with each of those grants, so
// whichever is detached last still knows them.

// recordsFor spreads what attach made over the new grants of gpus: each
// GPU's own node, and the control nodes made now or recorded with the
// container's earlier grants (prior).
func recordsFor(inv *gpu.Inventory, gpus []*gpu.GPU, made []hotplug.Made, prior []ledger.Grant) map[string][]ledger.CreatedNode {
	control := recorded(inv, prior, false)
	for _, n := range made {
		if isControl(inv, n.Path) {
			control = append(control, n)
		}
	}
	// a MIG parent node a sibling instance's grant recorded is this
	// instance's too: whichever is detached last removes it
	shared := recorded(inv, prior, true)
	out := map[string][]ledger.CreatedNode{}
	for _, g := range gpus {
		var recs []ledger.CreatedNode
		for _, n := range append(slices.Clone(made), shared...) {
			if isNodeOf(*g, n.Path) && !slices.Contains(recs, ledger.CreatedNode(n)) {
				recs = append(recs, ledger.CreatedNode(n))
			}
		}
		for _, n := range control {
			recs = append(recs, ledger.CreatedNode(n))
		}
		if len(recs) > 0 {
			out[g.UUID] = recs
		}
	}
	return out
}

// recorded returns, once each, the nodes recorded with grants: the control
// nodes, and their GPU nodes too when withGPUs.
func recorded(inv *gpu.Inventory, grants []ledger.Grant, withGPUs bool) []hotplug.Made {
	var out []hotplug.Made
	for _, g := range grants {
		for _, c := range g.Nodes.List() {
			n := hotplug.Made(c)
			if (withGPUs || containerWide(inv, n)) && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// removable is what taking sel away may remove: the GPUs' own nodes, and
// the control nodes too when sel is all the container holds.
func removable(inv *gpu.Inventory, sel []ledger.Grant, last bool) []hotplug.Made {
	all := recorded(inv, sel, true)
	if last {
		return all
	}
	return slices.DeleteFunc(all, func(n hotplug.Made) bool { return containerWide(inv, n) })
}

// merge records made with the grants (of one container) it belongs to, as
// recordsFor does, replacing records of the same paths; it returns only the
// grants whose records changed.
func merge(inv *gpu.Inventory, grants []ledger.Grant, made []hotplug.Made) map[string][]ledger.CreatedNode {
	out := map[string][]ledger.CreatedNode{}
	for _, g := range grants {
		p, ok := inv.ByUUID(g.GPU)
		var add []ledger.CreatedNode
		for _, n := range made {
			if isControl(inv, n.Path) || (ok && isNodeOf(*p, n.Path)) {
				add = append(add, ledger.CreatedNode(n))
			}
		}
		if len(add) == 0 {
			continue
		}
		recs := slices.DeleteFunc(g.Nodes.List(), func(c ledger.CreatedNode) bool {
			return slices.ContainsFunc(add, func(a ledger.CreatedNode) bool { return a.Path == c.Path })
		})
		out[g.GPU] = append(recs, add...)
	}
	return out
}

// isNodeOf reports whether path is one of the device's nodes.
func isNodeOf(g gpu.GPU, path string) bool {
	return slices.ContainsFunc(g.Nodes(), func(n gpu.DeviceNode) bool { return n.Path == path })
}

// ownNodes are the nodes that are the device's alone: a GPU's node, a MIG
// instance's capability nodes (its parent's node is its siblings' too).
// Who holds them is who uses the device.
func ownNodes(g *gpu.GPU) []gpu.DeviceNode {
	if g.Instance != nil {
		return g.Instance.Caps
	}
	return []gpu.DeviceNode{g.Node()}
}

// gpuNodes are the nodes of every GPU and every MIG instance, once each.
func gpuNodes(inv *gpu.Inventory) []gpu.DeviceNode {
	var out []gpu.DeviceNode
	for _, g := range inv.GPUs {
		out = gpu.AppendNodes(out, g)
		for _, m := range g.MIG {
			out = append(out, m.Caps...)
		}
	}
	return out
}

// withoutPaths drops from nodes those at the paths of drop.
func withoutPaths(nodes, drop []gpu.DeviceNode) []gpu.DeviceNode {
	return slices.DeleteFunc(nodes, func(n gpu.DeviceNode) bool {
		return slices.ContainsFunc(drop, func(d gpu.DeviceNode) bool { return d.Path == n.Path })
	})
}

// withoutGrants is held less the grants of sel.
func withoutGrants(held, sel []ledger.Grant) []ledger.Grant {
	return slices.DeleteFunc(slices.Clone(held), func(g ledger.Grant) bool {
		return slices.ContainsFunc(sel, func(s ledger.Grant) bool { return s.GPU == g.GPU })
	})
}

// containerWide reports whether a record is the container's as long as it
// holds any GPU by attach: a control node, or a file that is not a device
// node (the linker cache mounted with the driver, see RecordCache).
func containerWide(inv *gpu.Inventory, n hotplug.Made) bool {
	return isFile(n) || isControl(inv, n.Path)
}

// isFile reports whether a record is a file hotgpu put in the container
// other than a device node (whose device number is never 0).
func isFile(n hotplug.Made) bool { return n.Rdev == 0 }

func isControl(inv *gpu.Inventory, path string) bool {
	return slices.ContainsFunc(inv.Control, func(n gpu.DeviceNode) bool { return n.Path == path })
}

// notMade lists the paths of nodes that are not among made.
func notMade(nodes []gpu.DeviceNode, made []hotplug.Made) []string {
	var out []string
	for _, n := range nodes {
		if !slices.ContainsFunc(made, func(m hotplug.Made) bool { return m.Path == n.Path }) {
			out = append(out, n.Path)
		}
	}
	return out
}
