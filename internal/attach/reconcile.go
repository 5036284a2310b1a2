package attach

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	devices "github.com/opencontainers/cgroups/devices/config"

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
// start, before serving requests. A container on cgroup v2 whose own device
// rules cannot be read yet (NRI has not told them, and its bundle cannot be
// found) keeps its Pending grants: released without a revoke, its GPU would
// stay open to it while the ledger hands it out. Reconcile retries them.
func (m *Manager) Recover() (undone []ledger.Grant, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	return m.rollBackPending()
}

func (m *Manager) rollBackPending() (undone []ledger.Grant, err error) {
	inv := m.inv.Inventory()
	byContainer := map[string][]ledger.Grant{}
	for _, g := range m.ledger.Grants() {
		if g.State == ledger.Pending {
			byContainer[g.Holder.ContainerID] = append(byContainer[g.Holder.ContainerID], g)
		}
	}
	var errs []error
	for id, pending := range byContainer {
		held := m.ledger.Container(id)
		r, err := m.resolveHolder(pending[0].Holder)
		if errors.Is(err, hotplug.ErrRulesUnknown) {
			m.log.WithError(err).WithField("container", pending[0].Holder.String()).
				Error("kept an interrupted attach/detach: its device cgroup cannot be rebuilt yet; retried at the next reconcile")
			continue
		}
		if err == nil {
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
// and logged (containers outside NRI are only noticed this way), and
// interrupted operations Recover had to keep are rolled back.
func (m *Manager) Reconcile(id string) (reapplied int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	var errs []error
	if id == "" {
		if _, err := m.rollBackPending(); err != nil {
			errs = append(errs, err)
		}
	}
	inv := m.inv.Inventory()
	byContainer := map[string][]ledger.Grant{}
	for _, g := range m.ledger.Grants() {
		if g.Reason == ledger.Attach && g.State == ledger.Active && (id == "" || g.Holder.ContainerID == id) {
			byContainer[g.Holder.ContainerID] = append(byContainer[g.Holder.ContainerID], g)
		}
	}
	for cid, grants := range byContainer {
		if !m.registry.Has(cid) {
			live, err := m.releaseGone(inv, cid, grants)
			if err != nil {
				errs = append(errs, err)
			}
			if grants = live; len(grants) == 0 {
				continue
			}
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

// releaseGone releases the grants of container cid (unknown to NRI) whose
// holder process is gone, logs them, and returns the others. When the
// container outlives that process (others remain in its cgroup), the GPUs
// are revoked there first: released alone, they would stay open to it.
func (m *Manager) releaseGone(inv *gpu.Inventory, cid string, grants []ledger.Grant) (live []ledger.Grant, err error) {
	var gone []ledger.Grant
	why := map[string]string{}
	for _, g := range grants {
		if why[g.GPU] = goneReason(g.Holder); why[g.GPU] == "" {
			live = append(live, g)
		} else {
			gone = append(gone, g)
		}
	}
	if len(gone) == 0 {
		return live, nil
	}
	if err := m.revokeLeft(inv, cid, gone); err != nil {
		return grants, fmt.Errorf("failed to take GPUs from container %s, which outlives the process they were attached by: %w", ledger.ShortID(cid), err)
	}
	uuids := make([]string, 0, len(gone))
	for _, g := range gone {
		uuids = append(uuids, g.GPU)
	}
	if _, err := m.ledger.Release(cid, uuids...); err != nil {
		return grants, err
	}
	for _, g := range gone {
		m.log.WithFields(map[string]any{"container": g.Holder.String(), "pid": g.Holder.PID, "gpu": g.GPU, "reason": why[g.GPU]}).
			Warn("released a GPU attached to a container that is gone")
	}
	return live, nil
}

// revokeLeft revokes the gone grants in the cgroup their holder recorded,
// through another process of it, when it still has one.
func (m *Manager) revokeLeft(inv *gpu.Inventory, cid string, gone []ledger.Grant) error {
	h := gone[0].Holder
	if h.Cgroup == "" {
		return nil // recorded before hotgpu kept cgroups: nothing to find it by
	}
	pids, err := hotplug.CgroupProcs(h.Cgroup)
	if err != nil || len(pids) == 0 {
		return err
	}
	for _, pid := range pids {
		r, err := m.resolvePID(pid)
		if err != nil || r.holder.ContainerID != cid {
			continue
		}
		held := m.ledger.Container(cid)
		nodes := nodesOfGrants(inv, gone)
		last := len(gone) == len(held)
		if last {
			nodes = append(nodes, inv.Control...)
		}
		m.undo(r, inv, held, nodes, removable(inv, gone, last))
		return nil
	}
	return fmt.Errorf("none of the processes %v of cgroup %s can be targeted", pids, h.Cgroup)
}

// goneReason says why the process a holder was recorded with no longer
// stands for its container, or "" while it does: it exited, its pid now
// belongs to a process started later, or it is in another cgroup.
func goneReason(h ledger.Holder) string {
	if h.PID == 0 {
		return ""
	}
	if !alive(h.PID) {
		return "its process exited"
	}
	if !h.External() {
		return "" // NRI releases it
	}
	if h.StartTime != 0 {
		start, err := hotplug.StartTime(h.PID)
		if err != nil {
			return "its process exited"
		}
		if start != h.StartTime {
			return "its pid now belongs to another process"
		}
	}
	t, err := hotplug.TargetFromPID(h.PID)
	if err != nil {
		return "" // cannot tell now; the next pass looks again
	}
	switch {
	case h.Cgroup != "" && t.Cgroup != filepath.Clean(h.Cgroup):
		return "its process is in another cgroup now"
	case h.Cgroup == "" && containerIDOf(t, h.PID) != h.ContainerID:
		return "its pid now belongs to another container"
	}
	return ""
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
	if start, err := hotplug.StartTime(h.PID); h.StartTime != 0 && (err != nil || start != h.StartTime) {
		return nil, ErrNotFound // the pid now belongs to another process
	}
	if h.Cgroup != "" {
		t, err := hotplug.TargetFromCgroupsPath(h.PID, h.Cgroup)
		if err != nil {
			return nil, err
		}
		r := &resolved{holder: h, target: t}
		if err := m.specRules(r); err != nil {
			return nil, err
		}
		return r, nil
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
			out = gpu.AppendNodes(out, *p)
		}
	}
	return out
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// LiftQuarantines frees every quarantined GPU that no process of the node
// holds any more, and returns them. The daemon calls it on every periodic
// reconcile; it scans /proc only when a GPU is quarantined.
func (m *Manager) LiftQuarantines() ([]ledger.Grant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inv := m.inv.Inventory()
	var quarantined []ledger.Grant
	var gpus []*gpu.GPU
	for _, g := range m.ledger.Grants() {
		if g.Reason != ledger.Quarantine {
			continue
		}
		if p, ok := inv.ByUUID(g.GPU); ok { // a GPU gone from the bus stays quarantined
			quarantined = append(quarantined, g)
			gpus = append(gpus, p)
		}
	}
	if len(quarantined) == 0 {
		return nil, nil
	}
	holders, err := m.holders(gpus)
	if err != nil {
		return nil, err
	}
	var lifted []ledger.Grant
	var errs []error
	for _, g := range quarantined {
		if len(holders[g.GPU]) > 0 {
			continue
		}
		ok, err := m.ledger.Lift(g.GPU)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			lifted = append(lifted, g)
			m.log.WithFields(map[string]any{"gpu": g.GPU, "was": g.Note}).Info("quarantine lifted: no process holds the GPU any more")
		}
	}
	return lifted, errors.Join(errs...)
}

// RevokeStrays takes back, on cgroup v1, GPUs that something re-granted to
// a container after hotgpu detached them (another tool, a unit's
// DeviceAllow re-applied, a hand-written devices.allow): a GPU node that
// the container's devices.list allows although the ledger does not give it
// to the container and its own spec did not ask for it. It watches the
// containers holding live-attached GPUs and those a GPU was detached from
// (id "" for all of them) and returns how many GPUs it revoked.
func (m *Manager) RevokeStrays(id string) (revoked int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	watched := maps.Clone(m.detached)
	for _, g := range m.ledger.Grants() {
		if g.Reason == ledger.Attach && g.State == ledger.Active {
			watched[g.Holder.ContainerID] = g.Holder
		}
	}
	inv := m.inv.Inventory()
	var errs []error
	for cid, h := range watched {
		if id != "" && cid != id {
			continue
		}
		r, err := m.resolveHolder(h)
		if err != nil {
			delete(m.detached, cid) // gone: nothing left to watch
			continue
		}
		n, err := m.revokeStrays(r, inv)
		revoked += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return revoked, errors.Join(errs...)
}

func (m *Manager) revokeStrays(r *resolved, inv *gpu.Inventory) (int, error) {
	inUnit, err := m.revokeUnitStrays(r, inv)
	if err != nil {
		return 0, err
	}
	inCgroup, err := m.revokeCgroupStrays(r, inv)
	return inUnit + inCgroup, err
}

func (m *Manager) revokeCgroupStrays(r *resolved, inv *gpu.Inventory) (int, error) {
	if r.target.DevicesDir == "" {
		return 0, nil // cgroup v2: access checks that the program is ours
	}
	access := hotplug.NewV1(r.target.DevicesDir)
	if all, err := access.Unconfined(); err != nil || all {
		return 0, err
	}
	holds := nodesOfGrants(inv, m.ledger.Container(r.holder.ContainerID))
	var stray []gpu.DeviceNode
	for _, n := range gpuNodes(inv) {
		if slices.Contains(holds, n) || specAllows(r.rules, n) {
			continue
		}
		ok, err := access.Has(n)
		if err != nil {
			return 0, err
		}
		if ok {
			stray = append(stray, n)
		}
	}
	if len(stray) == 0 {
		return 0, nil
	}
	if err := access.Revoke(stray); err != nil {
		return 0, fmt.Errorf("failed to revoke GPUs re-granted to %s: %w", r.holder, err)
	}
	m.log.WithFields(map[string]any{"container": r.holder.String(), "nodes": stray}).
		Warn("revoked GPUs that were re-granted to a container the ledger does not give them to")
	return len(stray), nil
}

// specAllows reports whether the container's own rules let it read or
// write the node.
func specAllows(rules []*devices.Rule, n gpu.DeviceNode) bool {
	for _, r := range rules {
		if r.Allow && (r.Type == devices.CharDevice || r.Type == devices.WildcardDevice) &&
			(r.Major == devices.Wildcard || r.Major == n.Major) &&
			(r.Minor == devices.Wildcard || r.Minor == n.Minor) &&
			strings.ContainsAny(string(r.Permissions), "rw") {
			return true
		}
	}
	return false
}
