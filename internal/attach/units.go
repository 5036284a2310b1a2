package attach

import (
	"errors"
	"fmt"
	"slices"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
)

// Units is the service manager that owns containers' cgroups under the
// systemd cgroup driver (internal/systemd). It re-applies a unit's device
// list whenever it re-realizes the unit (daemon-reload), so a grant it does
// not know would be dropped: every grant and revoke is told to it too.
type Units interface {
	// SetDevices makes rules the whole device access of unit.
	SetDevices(unit string, rules []*devices.Rule) error
	// Allows reports whether unit's device list lets the device through.
	Allows(unit string, major, minor int64) (bool, error)
}

// SetUnits makes grants to containers whose cgroup is a systemd scope also
// go to that scope's DeviceAllow= through u.
func (m *Manager) SetUnits(u Units, unitOf func(cgroup string) string) {
	m.units, m.unitOf = u, unitOf
}

// unitOfTarget is the systemd unit that owns r's cgroup, "" when none does
// or hotgpu was not told to speak to systemd.
func (m *Manager) unitOfTarget(r *resolved) string {
	if m.units == nil || m.unitOf == nil {
		return ""
	}
	return m.unitOf(r.target.Cgroup)
}

// unitAccess is the device access of a container in a systemd scope: the
// cgroup (for now) and the unit's DeviceAllow= (for every later
// re-realization), kept in step. The unit's list is always written whole,
// the container's own rules plus the nodes it holds, exactly as runc would
// write it, so a revoke really removes the entry (DeviceAllow= only grows
// otherwise).
type unitAccess struct {
	cgroup  hotplug.DeviceAccess
	units   Units
	unit    string
	base    []*devices.Rule
	granted []gpu.DeviceNode
}

var _ hotplug.DeviceAccess = (*unitAccess)(nil)

// Grant writes the unit's list first, so that systemd's own program (cgroup
// v2) lets the nodes through, then grants them in the cgroup; a failure
// puts the unit's list back.
func (u *unitAccess) Grant(nodes []gpu.DeviceNode) error {
	next := slices.Clone(u.granted)
	for _, n := range nodes {
		if !slices.ContainsFunc(next, sameNode(n)) {
			next = append(next, n)
		}
	}
	if err := u.set(next); err != nil {
		return err
	}
	if err := u.cgroup.Grant(nodes); err != nil {
		if uerr := u.set(u.granted); uerr != nil {
			return errors.Join(err, fmt.Errorf("failed to restore the device list of unit %s: %w", u.unit, uerr))
		}
		return err
	}
	u.granted = next
	return nil
}

// Revoke takes the nodes out of the cgroup first (access ends now), then
// out of the unit's list; a failure there grants them back in the cgroup.
func (u *unitAccess) Revoke(nodes []gpu.DeviceNode) error {
	if err := u.cgroup.Revoke(nodes); err != nil {
		return err
	}
	next := slices.DeleteFunc(slices.Clone(u.granted), func(g gpu.DeviceNode) bool {
		return slices.ContainsFunc(nodes, sameNode(g))
	})
	if err := u.set(next); err != nil {
		if gerr := u.cgroup.Grant(nodes); gerr != nil {
			return errors.Join(err, fmt.Errorf("failed to restore the grant in the cgroup: %w", gerr))
		}
		return err
	}
	u.granted = next
	return nil
}

// Has reports whether the grant is in force in the cgroup and in the unit:
// a unit that lost it would drop it at the next daemon-reload.
func (u *unitAccess) Has(n gpu.DeviceNode) (bool, error) {
	ok, err := u.cgroup.Has(n)
	if err != nil || !ok {
		return ok, err
	}
	return u.units.Allows(u.unit, n.Major, n.Minor)
}

func (u *unitAccess) set(granted []gpu.DeviceNode) error {
	rules := slices.Clip(u.base)
	for _, n := range granted {
		rules = append(rules, &devices.Rule{Type: devices.CharDevice, Major: n.Major, Minor: n.Minor,
			Permissions: "rwm", Allow: true})
	}
	return u.units.SetDevices(u.unit, rules)
}

func sameNode(a gpu.DeviceNode) func(gpu.DeviceNode) bool {
	return func(b gpu.DeviceNode) bool { return a.Major == b.Major && a.Minor == b.Minor }
}

// withUnit wraps a, the cgroup access of r, so that it also keeps the
// device list of r's systemd unit, when r's cgroup is one. The unit's list
// is written whole, so the container's own rules must be known: without
// them, the next daemon-reload would take its other devices away.
func (m *Manager) withUnit(r *resolved, a hotplug.DeviceAccess, base []*devices.Rule, granted []gpu.DeviceNode) (hotplug.DeviceAccess, error) {
	unit := m.unitOfTarget(r)
	if unit == "" {
		return a, nil
	}
	if len(r.rules) == 0 {
		return nil, fmt.Errorf("refusing %s: its cgroup is systemd unit %s, whose device list hotgpu must write whole, "+
			"and the container's own device rules are unknown; target it by container id or pod once hotgpud sees it through NRI",
			r.holder, unit)
	}
	return &unitAccess{cgroup: a, units: m.units, unit: unit, base: base, granted: slices.Clone(granted)}, nil
}

// revokeUnitStrays rewrites the device list of r's systemd unit when it
// allows a GPU that the ledger does not give the container and its own
// rules did not ask for (someone set DeviceAllow= by hand, or an old list
// came back): systemd would open it again at the next daemon-reload. It
// returns how many such GPUs it took out of the list.
func (m *Manager) revokeUnitStrays(r *resolved, inv *gpu.Inventory) (int, error) {
	unit := m.unitOfTarget(r)
	if unit == "" {
		return 0, nil
	}
	held := m.ledger.Container(r.holder.ContainerID)
	holds := map[string]bool{}
	for _, g := range held {
		holds[g.GPU] = true
	}
	var stray []gpu.DeviceNode
	for _, g := range inv.GPUs {
		n := g.Node()
		if holds[g.UUID] || specAllows(r.rules, n) {
			continue
		}
		ok, err := m.units.Allows(unit, n.Major, n.Minor)
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
	access, err := m.access(r, inv, held)
	if err != nil {
		return 0, err
	}
	ua, ok := access.(*unitAccess)
	if !ok {
		return 0, fmt.Errorf("internal error: %s has no unit access", r.holder)
	}
	if err := ua.set(ua.granted); err != nil {
		return 0, fmt.Errorf("failed to take GPUs re-granted to %s out of unit %s: %w", r.holder, unit, err)
	}
	m.log.WithFields(map[string]any{"container": r.holder.String(), "unit": unit, "nodes": stray}).
		Warn("took GPUs the ledger does not give a container out of its systemd unit's device list")
	return len(stray), nil
}
