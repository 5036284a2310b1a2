package attach

import (
	"errors"
	"fmt"
	"os"
	"slices"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Result says what an operation did.
type Result struct {
	Holder ledger.Holder `json:"holder"`
	GPUs   []gpu.GPU     `json:"gpus"`
}

// ErrBusy is returned when a process still has a GPU open.
var ErrBusy = errors.New("GPU is in use")

// Attach gives the container the named GPUs, or count GPUs of hotgpu's
// choosing. On any error the container and the ledger are as before.
func (m *Manager) Attach(t Target, ids []string, count int) (*Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	r, err := m.resolve(t)
	if err != nil {
		return nil, err
	}
	inv := m.inv.Inventory()
	gpus, err := m.pick(inv, ids, count)
	if err != nil {
		return nil, err
	}
	if err := checkSpecGPUs(r, gpus); err != nil {
		return nil, err
	}
	prior := m.ledger.Container(r.holder.ContainerID)
	nodes := nodesOf(gpus)
	if len(prior) == 0 {
		nodes = append(nodes, inv.Control...)
	}
	uuids := uuidsOf(gpus)
	log := m.log.WithFields(map[string]any{"container": r.holder.String(), "gpus": uuids})
	if err := m.ledger.Acquire(r.holder, ledger.Attach, ledger.Pending, uuids...); err != nil {
		return nil, err
	}
	if err := m.apply(r, inv, prior, nodes); err != nil {
		if _, rerr := m.ledger.Release(r.holder.ContainerID, uuids...); rerr != nil {
			log.WithError(rerr).Error("failed to roll back reservation; it is rolled back at the next start")
		}
		log.WithError(err).Warn("attach failed and was rolled back")
		return nil, err
	}
	if err := m.ledger.SetState(r.holder.ContainerID, ledger.Active, uuids...); err != nil {
		m.undo(r, inv, prior, nodes)
		_, _ = m.ledger.Release(r.holder.ContainerID, uuids...)
		return nil, err
	}
	log.Info("attached")
	return &Result{Holder: r.holder, GPUs: deref(gpus)}, nil
}

// apply grants nodes in the cgroup and creates them in the container,
// undoing its own steps on failure. Only what it added is undone: access
// and nodes the container had before stay.
func (m *Manager) apply(r *resolved, inv *gpu.Inventory, prior []ledger.Grant, nodes []gpu.DeviceNode) error {
	if err := m.step("reserved"); err != nil {
		return err
	}
	access, err := m.access(r, inv, prior)
	if err != nil {
		return fmt.Errorf("failed to open the container's device cgroup: %w", err)
	}
	granted, err := hotplug.GrantMissing(access, nodes)
	if err != nil {
		return fmt.Errorf("failed to grant devices: %w", err)
	}
	var created []gpu.DeviceNode
	rollback := func(cause error) error {
		hotplug.RemoveNodes(r.target.Root, created)
		if len(granted) == 0 {
			return cause
		}
		if err := access.Revoke(granted); err != nil {
			return errors.Join(cause, fmt.Errorf("failed to revoke devices during rollback: %w", err))
		}
		return cause
	}
	if err := m.step("granted"); err != nil {
		return rollback(err)
	}
	if created, err = hotplug.CreateNodes(r.target.Root, nodes, gpu.NodeMode); err != nil {
		return rollback(err)
	}
	if err := m.step("nodes"); err != nil {
		return rollback(err)
	}
	return nil
}

// undo removes nodes and revokes them, best effort.
func (m *Manager) undo(r *resolved, inv *gpu.Inventory, granted []ledger.Grant, nodes []gpu.DeviceNode) {
	for _, n := range nodes {
		if err := hotplug.RemoveNode(r.target.Root, n); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.WithError(err).WithField("node", n.Path).Warn("failed to remove node")
		}
	}
	access, err := m.access(r, inv, granted)
	if err == nil {
		err = access.Revoke(nodes)
	}
	if err != nil {
		m.log.WithError(err).Warn("failed to revoke devices")
	}
}

// Detach takes GPUs away from the container: the named ones, or every GPU
// it got by attach or annotation when ids is empty. A GPU a process holds
// open is refused unless force. Kubelet's GPUs are never detached: kubelet
// would hand them out again while the pod still uses them.
func (m *Manager) Detach(t Target, ids []string, force bool) (*Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	r, err := m.resolve(t)
	if err != nil {
		return nil, err
	}
	inv := m.inv.Inventory()
	held := m.ledger.Container(r.holder.ContainerID)
	sel, err := selectGrants(inv, held, ids)
	if err != nil {
		return nil, err
	}
	gpus := make([]*gpu.GPU, 0, len(sel))
	for _, g := range sel {
		p, _ := inv.ByUUID(g.GPU)
		gpus = append(gpus, p)
	}
	if err := m.checkBusy(r, gpus, force); err != nil {
		return nil, err
	}
	nodes := nodesOf(gpus)
	if len(sel) == len(held) {
		nodes = append(nodes, inv.Control...)
	}
	uuids := uuidsOf(gpus)
	if err := m.ledger.SetState(r.holder.ContainerID, ledger.Pending, uuids...); err != nil {
		return nil, err
	}
	if err := m.remove(r, inv, held, nodes); err != nil {
		_ = m.ledger.SetState(r.holder.ContainerID, ledger.Active, uuids...)
		return nil, err
	}
	if _, err := m.ledger.Release(r.holder.ContainerID, uuids...); err != nil {
		return nil, err
	}
	m.log.WithFields(map[string]any{"container": r.holder.String(), "gpus": uuids, "force": force}).Info("detached")
	return &Result{Holder: r.holder, GPUs: deref(gpus)}, nil
}

func (m *Manager) remove(r *resolved, inv *gpu.Inventory, held []ledger.Grant, nodes []gpu.DeviceNode) error {
	access, err := m.access(r, inv, held)
	if err != nil {
		return fmt.Errorf("failed to open the container's device cgroup: %w", err)
	}
	if err := access.Revoke(nodes); err != nil {
		return fmt.Errorf("failed to revoke devices: %w", err)
	}
	if err := m.step("revoked"); err != nil {
		_ = access.Grant(nodes)
		return err
	}
	for _, n := range nodes {
		err := hotplug.RemoveNode(r.target.Root, n)
		if errors.Is(err, hotplug.ErrUnsafePath) {
			// The container put something else (a symlink) at the node's
			// path. It is not ours to remove, and access is already revoked:
			// refusing here would let a container keep a GPU by planting it.
			m.log.WithError(err).WithField("node", n.Path).Warn("left a file the container put at a GPU node's path")
			continue
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = access.Grant(nodes)
			return fmt.Errorf("failed to remove %s from the container: %w", n.Path, err)
		}
	}
	return m.step("removed")
}

func selectGrants(inv *gpu.Inventory, held []ledger.Grant, ids []string) ([]ledger.Grant, error) {
	if len(ids) == 0 {
		var out []ledger.Grant
		for _, g := range held {
			if g.Reason != ledger.Kubelet {
				out = append(out, g)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("the container holds no GPU that can be detached")
		}
		return out, nil
	}
	gpus, err := inv.LookupAll(ids)
	if err != nil {
		return nil, err
	}
	var out []ledger.Grant
	for _, p := range gpus {
		i := slices.IndexFunc(held, func(g ledger.Grant) bool { return g.GPU == p.UUID })
		if i < 0 {
			return nil, fmt.Errorf("GPU %d is not attached to this container", p.Index)
		}
		if held[i].Reason == ledger.Kubelet {
			return nil, fmt.Errorf("GPU %d was allocated by kubelet and stays with the pod until it ends", p.Index)
		}
		out = append(out, held[i])
	}
	return out, nil
}

func (m *Manager) checkBusy(r *resolved, gpus []*gpu.GPU, force bool) error {
	procs, err := r.target.Procs()
	if err != nil {
		return fmt.Errorf("failed to list the container's processes: %w", err)
	}
	for _, g := range gpus {
		pids, err := hotplug.OpenBy(procs, g.Node())
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			continue
		}
		if !force {
			return fmt.Errorf("%w: GPU %d is open in process(es) %v of the container; stop them or detach with --force", ErrBusy, g.Index, pids)
		}
		m.log.WithFields(map[string]any{"gpu": g.Index, "pids": pids}).Warn("detaching a GPU that is in use (--force)")
	}
	return nil
}

// access returns the container's device access. For cgroup v2, where the
// whole allow-list is one program, the program is rebuilt from the
// container's own rules minus every GPU and control node, plus the nodes of
// the GPUs the ledger says it holds (for any reason): so a detached GPU is
// really gone even when the container's spec once allowed it. A container
// outside NRI (r.specGPUs) keeps the GPUs of its spec the ledger does not
// record for it: it was created with them.
func (m *Manager) access(r *resolved, inv *gpu.Inventory, held []ledger.Grant) (hotplug.DeviceAccess, error) {
	id := r.holder.ContainerID
	if a, ok := m.v2[id]; ok {
		return a, nil
	}
	managed := allNodes(inv)
	if r.specGPUs {
		managed = nodesOfGrants(inv, held)
	}
	a, err := r.target.Devices(withoutNodes(r.rules, managed), grantedNodes(inv, held))
	if err != nil {
		return nil, err
	}
	if _, isV2 := a.(*hotplug.V2); isV2 {
		m.v2[id] = a
	}
	return a, nil
}

// prune forgets the cgroup v2 access of containers that hold no GPU any
// more. Every operation calls it on its way out.
func (m *Manager) prune() {
	if len(m.v2) == 0 {
		return
	}
	holds := map[string]bool{}
	for _, g := range m.ledger.Grants() {
		holds[g.Holder.ContainerID] = true
	}
	for id := range m.v2 {
		if !holds[id] {
			delete(m.v2, id)
		}
	}
}

// grantedNodes are the nodes of the held GPUs, plus the control nodes when
// the container holds any GPU.
func grantedNodes(inv *gpu.Inventory, held []ledger.Grant) []gpu.DeviceNode {
	out := nodesOfGrants(inv, held)
	if len(out) > 0 {
		out = append(out, inv.Control...)
	}
	return out
}

// allNodes are the nodes of every GPU and the control nodes.
func allNodes(inv *gpu.Inventory) []gpu.DeviceNode {
	out := make([]gpu.DeviceNode, 0, len(inv.GPUs)+len(inv.Control))
	for _, g := range inv.GPUs {
		out = append(out, g.Node())
	}
	return append(out, inv.Control...)
}

// withoutNodes drops the rules that allow exactly one of nodes;
// grantedNodes puts back the ones the container still holds.
func withoutNodes(rules []*devices.Rule, nodes []gpu.DeviceNode) []*devices.Rule {
	isNode := map[[2]int64]bool{}
	for _, n := range nodes {
		isNode[[2]int64{n.Major, n.Minor}] = true
	}
	out := make([]*devices.Rule, 0, len(rules))
	for _, r := range rules {
		if r.Allow && r.Type == devices.CharDevice && isNode[[2]int64{r.Major, r.Minor}] {
			continue
		}
		out = append(out, r)
	}
	return out
}

func nodesOf(gpus []*gpu.GPU) []gpu.DeviceNode {
	out := make([]gpu.DeviceNode, 0, len(gpus))
	for _, g := range gpus {
		out = append(out, g.Node())
	}
	return out
}

func uuidsOf(gpus []*gpu.GPU) []string {
	out := make([]string, 0, len(gpus))
	for _, g := range gpus {
		out = append(out, g.UUID)
	}
	return out
}

func deref(gpus []*gpu.GPU) []gpu.GPU {
	out := make([]gpu.GPU, 0, len(gpus))
	for _, g := range gpus {
		out = append(out, *g)
	}
	return out
}
