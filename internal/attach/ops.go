package attach

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Result says what an operation did; it is the API's answer as it is.
type Result = api.Result

// ErrBusy is returned when a process still has a GPU open.
var ErrBusy = errors.New("GPU is in use")

// Attach gives the container the named GPUs or MIG devices, or count GPUs
// of hotgpu's choosing. On any error the container and the ledger are as
// before.
func (m *Manager) Attach(t Target, ids []string, count int) (*Result, error) {
	return m.attach(t, func(inv *gpu.Inventory) ([]*gpu.GPU, error) { return m.pick(inv, ids, count) }, "")
}

// Move attaches the GPUs of uuids, which kubelet allocated to the holder
// pod holderUID, to the container instead: the ledger records the grant as
// realising that allocation. Every GPU must be the holder's kubelet grant.
// On any error the container and the ledger are as before.
func (m *Manager) Move(t Target, holderUID string, uuids []string) (*Result, error) {
	if holderUID == "" || len(uuids) == 0 {
		return nil, errors.New("move: no holder pod or no GPUs")
	}
	return m.attach(t, func(inv *gpu.Inventory) ([]*gpu.GPU, error) {
		gpus, err := inv.LookupAll(uuids)
		if err != nil {
			return nil, err
		}
		for _, g := range gpus {
			cur, ok := m.ledger.Lookup(g.UUID)
			if !ok || cur.Reason != ledger.Kubelet || cur.Holder.PodUID != holderUID {
				return nil, fmt.Errorf("GPU %s is not allocated by kubelet to holder pod %s", g.ID(), holderUID)
			}
		}
		return gpus, nil
	}, holderUID)
}

// AttachMIG gives the container count free MIG devices of profile
// ("1g.5gb"), as Attach.
func (m *Manager) AttachMIG(t Target, profile string, count int) (*Result, error) {
	return m.attach(t, func(inv *gpu.Inventory) ([]*gpu.GPU, error) {
		return alloc.ChooseMIG(inv, available{m.ledger, m.health}, profile, count)
	}, "")
}

func (m *Manager) attach(t Target, pick func(*gpu.Inventory) ([]*gpu.GPU, error), realises string) (*Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.prune()
	r, err := m.resolve(t)
	if err != nil {
		return nil, err
	}
	inv := m.inv.Inventory()
	gpus, err := pick(inv)
	if err != nil {
		return nil, err
	}
	if err := checkSpecGPUs(r, gpus); err != nil {
		return nil, err
	}
	prior := m.ledger.Container(r.holder.ContainerID)
	// a MIG instance's parent node may be the container's already, through
	// a sibling instance: it is granted and made once
	nodes := withoutPaths(nodesOf(gpus), nodesOfGrants(inv, prior))
	if len(prior) == 0 {
		nodes = append(nodes, inv.Control...)
	}
	uuids := uuidsOf(gpus)
	r.holder.Realises = realises
	moved := m.grantsOf(realises, uuids)
	log := m.log.WithFields(map[string]any{"container": r.holder.String(), "gpus": uuids})
	// The nodes are made first, with no cgroup rule yet (they open
	// nothing), so that the one durable write that reserves the GPUs also
	// records them: a rollback or a crash afterwards removes exactly them.
	made, note, err := m.makeNodes(r, nodes)
	if err != nil {
		return nil, err
	}
	if err := m.ledger.Reserve(r.holder, ledger.Attach, uuids, recordsFor(inv, gpus, made, prior)); err != nil {
		hotplug.RemoveNodes(r.target.Root, made)
		return nil, err
	}
	if err := m.apply(r, inv, prior, nodes, made); err != nil {
		if _, rerr := m.ledger.Release(r.holder.ContainerID, uuids...); rerr != nil {
			log.WithError(rerr).Error("failed to roll back reservation; it is rolled back at the next start")
		}
		m.giveBack(moved)
		log.WithError(err).Warn("attach failed and was rolled back")
		return nil, err
	}
	if err := m.ledger.SetState(r.holder.ContainerID, ledger.Active, uuids...); err != nil {
		m.undo(r, inv, prior, nodes, made)
		_, _ = m.ledger.Release(r.holder.ContainerID, uuids...)
		m.giveBack(moved)
		return nil, err
	}
	log.Info("attached")
	return &Result{Holder: r.holder, GPUs: deref(gpus), Nodes: note}, nil
}

// apply grants nodes in the cgroup of the container, where attach made and
// reserved with the GPUs the nodes made. On failure it removes made and
// revokes what it granted: access and nodes the container had before stay.
// In a /dev shared with the host made is empty: the host's own nodes are
// there.
func (m *Manager) apply(r *resolved, inv *gpu.Inventory, prior []ledger.Grant, nodes []gpu.DeviceNode, made []hotplug.Made) error {
	rollback := func(cause error) error {
		hotplug.RemoveNodes(r.target.Root, made)
		return cause
	}
	if err := m.step("reserved"); err != nil {
		return rollback(err)
	}
	access, err := m.access(r, inv, prior)
	if err != nil {
		return rollback(fmt.Errorf("failed to open the container's device cgroup: %w", err))
	}
	granted, err := hotplug.GrantMissing(access, nodes)
	if err != nil {
		return rollback(fmt.Errorf("failed to grant devices: %w", err))
	}
	if err := m.step("granted"); err != nil {
		if len(granted) > 0 {
			if rerr := access.Revoke(granted); rerr != nil {
				err = errors.Join(err, fmt.Errorf("failed to revoke devices during rollback: %w", rerr))
			}
		}
		return rollback(err)
	}
	return nil
}

// makeNodes creates nodes in the container and returns the ones it made
// and, when it did not make them all, a note saying why.
func (m *Manager) makeNodes(r *resolved, nodes []gpu.DeviceNode) ([]hotplug.Made, string, error) {
	made, err := hotplug.CreateNodes(r.target.Root, nodes, gpu.NodeMode)
	switch {
	case errors.Is(err, hotplug.ErrSharedDir):
		m.log.WithError(err).WithField("container", r.holder.String()).
			Warn("the container's /dev is shared with the host: granted the devices, made no node")
		return nil, "existing (host /dev mount): not created, will not be removed; the container's /dev " +
			"is shared with the host, so hotgpu only granted the devices in its cgroup", nil
	case err != nil:
		return nil, "", err
	}
	if found := notMade(nodes, made); len(found) > 0 {
		return made, "already there, not created by hotgpu, will not be removed: " + strings.Join(found, ", "), nil
	}
	return made, "", nil
}

// undo removes the nodes hotgpu made and revokes nodes, best effort.
func (m *Manager) undo(r *resolved, inv *gpu.Inventory, granted []ledger.Grant, nodes []gpu.DeviceNode, made []hotplug.Made) {
	made, files := splitFiles(made)
	m.undoFiles(r, files)
	for _, n := range made {
		if err := hotplug.RemoveMade(r.target.Root, n); err != nil {
			m.log.WithError(err).WithField("node", n.Path).Warn("left a node in the container")
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
// it got by attach or annotation when ids is empty. A GPU that any process
// of the node holds (open or mapped) is refused unless force: the check
// runs once access is revoked, so it cannot miss an open just before, and
// a refused detach gives access back (new opens in the container fail with
// EPERM for the length of that scan). A GPU still held under force is
// quarantined, not freed: the device cgroup checks only open(2), so its
// holder keeps using it. Kubelet's GPUs are never detached:
// kubelet would hand them out again while the pod still uses them.
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
	// what the container keeps (a sibling MIG instance's parent node) stays
	kept := nodesOfGrants(inv, withoutGrants(held, sel))
	nodes := withoutPaths(nodesOf(gpus), kept)
	if len(sel) == len(held) {
		nodes = append(nodes, inv.Control...)
	}
	uuids := uuidsOf(gpus)
	made := slices.DeleteFunc(removable(inv, sel, len(sel) == len(held)), func(n hotplug.Made) bool {
		return slices.ContainsFunc(kept, func(k gpu.DeviceNode) bool { return k.Path == n.Path })
	})
	if err := m.ledger.SetState(r.holder.ContainerID, ledger.Pending, uuids...); err != nil {
		return nil, err
	}
	// The holders are looked for once, after access is revoked: no process
	// can open the GPUs after that scan, so what it finds is all there is
	// (a check before the revoke would miss an open in between). Busy
	// without force gives access back and refuses.
	var holders map[string][]int
	var scanErr error
	left, err := m.remove(r, inv, held, nodes, made, func() error {
		holders, scanErr = m.holders(gpus)
		if force {
			return nil
		}
		return refuseBusy(gpus, holders, scanErr)
	})
	if err != nil {
		_ = m.ledger.SetState(r.holder.ContainerID, ledger.Active, uuids...)
		return nil, err
	}
	m.detached[r.holder.ContainerID] = r.holder
	quarantined, err := m.releaseOrQuarantine(r.holder, gpus, holders, scanErr)
	if err != nil {
		return nil, err
	}
	m.log.WithFields(map[string]any{"container": r.holder.String(), "gpus": uuids, "force": force}).Info("detached")
	res := &Result{Holder: r.holder, GPUs: deref(gpus), Quarantined: deref(quarantined)}
	if left := append(notMade(nodes, made), left...); len(left) > 0 {
		res.Nodes = "left in place, not created by hotgpu: " + strings.Join(left, ", ")
	}
	return res, nil
}

// releaseOrQuarantine ends the holder's grants of gpus, whose access is
// revoked, by what the scan after the revoke found (holders, scanErr): a
// GPU no process holds is released, one still held is quarantined until no
// process does (LiftQuarantines). When the holders could not be read every
// GPU is quarantined: the next pass finds out.
func (m *Manager) releaseOrQuarantine(h ledger.Holder, gpus []*gpu.GPU, holders map[string][]int, scanErr error) (quarantined []*gpu.GPU, err error) {
	var free []string
	for _, g := range gpus {
		pids := holders[g.UUID]
		if scanErr == nil && len(pids) == 0 {
			free = append(free, g.UUID)
			continue
		}
		note := fmt.Sprintf("detached from %s while %s still held it; free again once no process does", h, describePIDs(pids))
		if scanErr != nil {
			note = fmt.Sprintf("detached from %s and its holders could not be checked (%v)", h, scanErr)
		}
		if err := m.ledger.Quarantine(h.ContainerID, note, g.UUID); err != nil {
			return nil, err
		}
		quarantined = append(quarantined, g)
		m.log.WithFields(map[string]any{"gpu": g.Index, "pids": pids, "container": h.String()}).
			Warn("GPU quarantined: a process still holds it after detach")
	}
	if len(free) > 0 {
		if _, err := m.ledger.Release(h.ContainerID, free...); err != nil {
			return nil, err
		}
	}
	return quarantined, nil
}

// remove revokes nodes, runs check (an error gives access back and is
// returned), removes the nodes hotgpu made (made), and returns the paths
// of those it found replaced and left.
func (m *Manager) remove(r *resolved, inv *gpu.Inventory, held []ledger.Grant, nodes []gpu.DeviceNode, made []hotplug.Made, check func() error) (kept []string, err error) {
	access, err := m.access(r, inv, held)
	if err != nil {
		return nil, fmt.Errorf("failed to open the container's device cgroup: %w", err)
	}
	if err := access.Revoke(nodes); err != nil {
		return nil, fmt.Errorf("failed to revoke devices: %w", err)
	}
	if err := m.step("revoked"); err != nil {
		_ = access.Grant(nodes)
		return nil, err
	}
	if err := check(); err != nil {
		if gerr := access.Grant(nodes); gerr != nil {
			// the ledger goes back to Active: reconcile grants it again
			m.log.WithError(gerr).WithField("container", r.holder.String()).Warn("failed to give back access after a refused detach; reconcile retries")
		}
		return nil, err
	}
	made, files := splitFiles(made)
	for _, n := range made {
		err := hotplug.RemoveMade(r.target.Root, n)
		if errors.Is(err, hotplug.ErrUnsafePath) || errors.Is(err, hotplug.ErrNotMade) {
			// Something else is at the node's path now (the container's
			// own file, a symlink, a mount from the host). It is not ours
			// to remove, and access is already revoked: refusing here
			// would let a container keep a GPU by planting it.
			m.log.WithError(err).WithField("node", n.Path).Warn("left a file at a GPU node's path that hotgpu did not create")
			kept = append(kept, n.Path)
			continue
		}
		if err != nil {
			_ = access.Grant(nodes)
			return nil, fmt.Errorf("failed to remove %s from the container: %w", n.Path, err)
		}
	}
	kept = append(kept, m.undoFiles(r, files)...)
	return kept, m.step("removed")
}

// undoFiles restores the container's view where attach put files other
// than device nodes (the linker cache): best effort, the GPU is gone
// already; it returns the paths it left.
func (m *Manager) undoFiles(r *resolved, files []hotplug.Made) []string {
	if len(files) == 0 {
		return nil
	}
	left, err := undoFiles(r.target.PID, files)
	if err != nil {
		m.log.WithError(err).WithField("container", r.holder.String()).Warn("failed to restore the container's own linker cache")
		for _, f := range files {
			if !slices.Contains(left, f.Path) {
				left = append(left, f.Path)
			}
		}
	}
	return left
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
			return nil, fmt.Errorf("GPU %s is not attached to this container", p.ID())
		}
		if held[i].Reason == ledger.Kubelet {
			return nil, fmt.Errorf("GPU %s was allocated by kubelet and stays with the pod until it ends", p.ID())
		}
		out = append(out, held[i])
	}
	return out, nil
}

// refuseBusy refuses a detach while any process of the node holds one of
// gpus (holders and scanErr: the scan after the revoke), or when the
// holders could not be read.
func refuseBusy(gpus []*gpu.GPU, holders map[string][]int, scanErr error) error {
	if scanErr != nil {
		return scanErr
	}
	for _, g := range gpus {
		if pids := holders[g.UUID]; len(pids) > 0 {
			return fmt.Errorf("%w: GPU %s is held open by %s; stop them or detach with --force (the GPU is then quarantined until they let go)", ErrBusy, g.ID(), describePIDs(pids))
		}
	}
	return nil
}

// holders finds, node-wide, the processes holding each GPU, by UUID: fds
// and mappings of its node, and what the driver reports when the inventory
// can ask it (Processes). hotgpud itself is left out: its NVML handles hold
// every GPU.
func (m *Manager) holders(gpus []*gpu.GPU) (map[string][]int, error) {
	self := os.Getpid()
	var own []gpu.DeviceNode
	for _, g := range gpus {
		own = append(own, ownNodes(g)...)
	}
	held, unreadable, err := hotplug.Holders(own, self)
	if err != nil {
		return nil, fmt.Errorf("failed to check which processes hold the GPUs: %w", err)
	}
	if len(unreadable) > 0 {
		m.log.WithField("pids", unreadable).Debug("busy check skipped processes it may not inspect")
	}
	out := make(map[string][]int, len(gpus))
	driver, _ := m.inv.(Processes)
	for _, g := range gpus {
		var pids []int
		for _, n := range ownNodes(g) {
			for _, pid := range held[n] {
				if !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		if driver != nil {
			running, err := driver.Processes(g.UUID)
			if err != nil {
				return nil, fmt.Errorf("failed to ask the driver which processes use GPU %d: %w", g.Index, err)
			}
			for _, pid := range running {
				if pid != self && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		out[g.UUID] = pids
	}
	return out, nil
}

// describePIDs names processes for messages: "process(es) 41 (python), 42 (sh)".
func describePIDs(pids []int) string {
	parts := make([]string, 0, len(pids))
	for _, pid := range pids {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			parts = append(parts, strconv.Itoa(pid))
			continue
		}
		// The name is the process's own choice (prctl): printable only.
		name := strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return '?'
		}, strings.TrimSuffix(string(comm), "\n"))
		parts = append(parts, fmt.Sprintf("%d (%s)", pid, name))
	}
	return "process(es) " + strings.Join(parts, ", ")
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
	base, granted := withoutNodes(r.rules, managed), grantedNodes(inv, held)
	a, err := r.target.Devices(base, granted)
	if err != nil {
		return nil, err
	}
	_, isV2 := a.(*hotplug.V2)
	if a, err = m.withUnit(r, a, base, granted); err != nil {
		return nil, err
	}
	if isV2 {
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

// allNodes are the nodes of every GPU and MIG instance and the control nodes.
func allNodes(inv *gpu.Inventory) []gpu.DeviceNode {
	return append(gpuNodes(inv), inv.Control...)
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

// nodesOf are the devices' nodes, once each (MIG siblings share one).
func nodesOf(gpus []*gpu.GPU) []gpu.DeviceNode {
	out := make([]gpu.DeviceNode, 0, len(gpus))
	for _, g := range gpus {
		out = gpu.AppendNodes(out, *g)
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

// grantsOf returns the kubelet grants of uuids that a move from holder pod
// realises ("" for a plain attach: none), to give back if the move fails.
func (m *Manager) grantsOf(realises string, uuids []string) []ledger.Grant {
	if realises == "" {
		return nil
	}
	var out []ledger.Grant
	for _, u := range uuids {
		if g, ok := m.ledger.Lookup(u); ok {
			out = append(out, g)
		}
	}
	return out
}

// giveBack restores the holder pod's kubelet grants a failed move took.
func (m *Manager) giveBack(grants []ledger.Grant) {
	for _, g := range grants {
		if err := m.ledger.Acquire(g.Holder, g.Reason, g.State, g.GPU); err != nil {
			m.log.WithError(err).WithField("gpu", g.GPU).Error("failed to give a GPU back to its holder pod's kubelet allocation")
		}
	}
}
