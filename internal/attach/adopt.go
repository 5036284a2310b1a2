package attach

import (
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// Adopt records the live-attached GPUs it finds in the device cgroups of
// the running containers that the ledger does not know about: after a
// corrupt state file, the rebuild from NRI finds the GPUs in containers'
// specs, but a live attach is only in the cgroup. A GPU allowed in a
// container's cgroup v1 devices.list, absent from its spec's rules and held
// by no one is recorded as attached to it; one the ledger gives to another
// container is reported as a conflict and left alone. cgroup v2 programs
// cannot be read back, so containers on v2 are skipped (and counted).
func (m *Manager) Adopt(containers []registry.Container) (adopted []ledger.Grant, conflicts, unreadable int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	inv := m.inv.Inventory()
	for _, c := range containers {
		if c.PID == 0 {
			continue
		}
		r, err := m.resolve(Target{ContainerID: c.ID})
		if err != nil {
			continue
		}
		if r.target.DevicesDir == "" {
			unreadable++
			continue
		}
		access, err := r.target.Devices(nil, nil)
		if err != nil {
			continue
		}
		if open, err := access.Has(sentinel); err != nil || open {
			continue // unconfined (privileged): its cgroup says nothing about hotgpu
		}
		for _, g := range holdable(inv) {
			if !allowsAll(access, c.Rules, ownNodes(g)) {
				continue
			}
			if cur, held := m.ledger.Lookup(g.UUID); held {
				if cur.Holder.ContainerID != c.ID {
					conflicts++
					m.log.WithFields(map[string]any{"gpu": g.ID(), "container": r.holder.String(), "ledger": cur.Holder.String()}).
						Error("a container's cgroup allows a GPU the ledger gives to another container")
				}
				continue
			}
			if err := m.ledger.Acquire(r.holder, ledger.Attach, ledger.Active, g.UUID); err != nil {
				continue
			}
			grant, _ := m.ledger.Lookup(g.UUID)
			adopted = append(adopted, grant)
		}
	}
	return adopted, conflicts, unreadable
}

// holdable lists the devices a container can hold: the GPUs not in MIG
// mode and the MIG instances of those in MIG mode.
func holdable(inv *gpu.Inventory) []*gpu.GPU {
	var out []*gpu.GPU
	for i := range inv.GPUs {
		if !inv.GPUs[i].MIGEnabled {
			out = append(out, &inv.GPUs[i])
		}
	}
	return append(out, inv.Instances("")...)
}

// allowsAll reports whether the cgroup allows every node and the
// container's own rules allow none of them (a node the runtime put there
// at creation is not a live attach).
func allowsAll(access hotplug.DeviceAccess, rules []registry.DeviceRule, nodes []gpu.DeviceNode) bool {
	for _, n := range nodes {
		if inSpec(rules, n) {
			return false
		}
		if ok, err := access.Has(n); err != nil || !ok {
			return false
		}
	}
	return len(nodes) > 0
}

// sentinel is a device number nothing grants: a cgroup that allows it
// allows everything.
var sentinel = gpu.DeviceNode{Path: "/dev/hotgpu-sentinel", Major: 0xfff, Minor: 0xffffe}

// inSpec reports whether the container's own rules allow exactly this node
// (the runtime put it there at creation, so it is not a live attach).
func inSpec(rules []registry.DeviceRule, n gpu.DeviceNode) bool {
	for _, r := range rules {
		if r.Allow && r.Type == "c" && r.Major != nil && r.Minor != nil && *r.Major == n.Major && *r.Minor == n.Minor {
			return true
		}
	}
	return false
}
