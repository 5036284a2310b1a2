package attach

import (
	"errors"
	"syscall"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Recover finishes what a crash interrupted. A grant still Pending was in
// the middle of an attach or a detach: either way the safe end state is
// "not attached", so its cgroup rule is revoked, the nodes recorded with it
// (only those hotgpu made) are removed, and it is released. (A crash in the
// instant between making a node and recording it leaves that node in the
// container, where without its rule it opens nothing.) Call it once at
// start, before serving requests.
func (m *Manager) Recover() (undone []ledger.Grant, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	inv := m.inv.Inventory()
	byContainer := map[string][]ledger.Grant{}
	all := m.ledger.Grants()
	for _, g := range all {
		if g.State == ledger.Pending {
			byContainer[g.Holder.ContainerID] = append(byContainer[g.Holder.ContainerID], g)
		}
	}
	var errs []error
	for id, pending := range byContainer {
		held := m.ledger.Container(id)
		if r, err := m.resolveHolder(pending[0].Holder); err == nil {
			nodes := nodesOfGrants(inv, pending)
			last := len(pending) == len(held)
			if last {
				nodes = append(nodes, inv.Control...)
			}
			m.undo(r, inv, held, nodes, removable(inv, pending, last))
		}
		uuids := make([]string, len(pending))
		for i, g := range pending {
			uuids[i] = g.GPU
		}
		if _, err := m.ledger.Release(id, uuids...); err != nil {
			errs = append(errs, err)
			continue
		}
		undone = append(undone, pending...)
	}
	if len(undone) > 0 {
		m.log.WithField("grants", len(undone)).Warn("rolled back attach/detach operations interrupted by a restart")
	}
	return undone, errors.Join(errs...)
}

// Reconcile re-checks every live-attached GPU of the container (every
// container when id is ""): a grant a runtime reset is re-applied and a
// missing node re-created. Grants of processes that are gone are released
// (containers outside NRI are only noticed this way).
func (m *Manager) Reconcile(id string) (reapplied int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	inv := m.inv.Inventory()
	byContainer := map[string][]ledger.Grant{}
	for _, g := range m.ledger.Grants() {
		if g.Reason == ledger.Attach && g.State == ledger.Active && (id == "" || g.Holder.ContainerID == id) {
			byContainer[g.Holder.ContainerID] = append(byContainer[g.Holder.ContainerID], g)
		}
	}
	var errs []error
	for cid, grants := range byContainer {
		h := grants[0].Holder
		if h.PID != 0 && !alive(h.PID) && !m.registry.Has(cid) {
			if _, err := m.ledger.Release(cid); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		n, err := m.reapply(inv, cid, grants)
		reapplied += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if reapplied > 0 {
		m.log.WithField("grants", reapplied).Warn("re-applied device grants that the runtime had reset")
	}
	return reapplied, errors.Join(errs...)
}

func (m *Manager) reapply(inv *gpu.Inventory, cid string, grants []ledger.Grant) (int, error) {
	r, err := m.resolveHolder(grants[0].Holder)
	if err != nil {
		return 0, nil // not running right now; NRI or the next pass decides
	}
	held := m.ledger.Container(cid)
	nodes := grantedNodes(inv, held)
	access, err := m.access(r, inv, held)
	if err != nil {
		return 0, err
	}
	var missing []gpu.DeviceNode
	for _, n := range nodes {
		ok, err := access.Has(n)
		if err != nil {
			return 0, err
		}
		if !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		if err := access.Grant(missing); err != nil {
			return 0, err
		}
	}
	made, err := hotplug.CreateNodes(r.target.Root, nodes, gpu.NodeMode)
	if errors.Is(err, hotplug.ErrSharedDir) {
		return len(missing), nil // the host's nodes serve it; see apply
	}
	if err != nil {
		return len(missing), err
	}
	if recs := merge(inv, grants, made); len(recs) > 0 {
		if err := m.ledger.SetNodes(cid, recs); err != nil {
			hotplug.RemoveNodes(r.target.Root, made)
			return len(missing), err
		}
	}
	return len(missing), nil
}

// resolveHolder rebuilds the target of a recorded holder.
func (m *Manager) resolveHolder(h ledger.Holder) (*resolved, error) {
	if c, ok := m.registry.Get(h.ContainerID); ok && c.PID != 0 {
		return m.resolve(Target{ContainerID: c.ID})
	}
	if h.PID == 0 || !alive(h.PID) {
		return nil, ErrNotFound
	}
	if h.Cgroup != "" {
		t, err := hotplug.TargetFromCgroupsPath(h.PID, h.Cgroup)
		if err != nil {
			return nil, err
		}
		return &resolved{holder: h, target: t, rules: hotplug.DefaultRules()}, nil
	}
	r, err := m.resolvePID(h.PID)
	if err != nil {
		return nil, err
	}
	if r.holder.ContainerID != h.ContainerID {
		return nil, ErrNotFound // the pid now belongs to someone else
	}
	return r, nil
}

func nodesOfGrants(inv *gpu.Inventory, gs []ledger.Grant) []gpu.DeviceNode {
	var out []gpu.DeviceNode
	for _, g := range gs {
		if p, ok := inv.ByUUID(g.GPU); ok {
			out = append(out, p.Node())
		}
	}
	return out
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
