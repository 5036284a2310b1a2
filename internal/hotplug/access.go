package hotplug

import (
	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// DeviceAccess opens and closes a container's cgroup to single character
// devices. Grant and Revoke are idempotent and all-or-nothing: on error the
// cgroup is as it was before the call.
type DeviceAccess interface {
	// Grant lets the container read, write and mknod the nodes.
	Grant(nodes []gpu.DeviceNode) error
	// Revoke takes that access away again.
	Revoke(nodes []gpu.DeviceNode) error
	// Has reports whether a grant of the node is in force, so that a
	// reconcile loop can re-apply grants a runtime has reset. v1 reads
	// devices.list; v2 checks that the attached program is the one this
	// DeviceAccess built and that it includes the node.
	Has(node gpu.DeviceNode) (bool, error)
}

// Devices returns the device access of the target, for the hierarchy that
// controls it: cgroup v1 when the host has a v1 devices hierarchy (also in
// hybrid mode, where runc uses v1), else cgroup v2.
//
// base and granted matter for cgroup v2 only, where access is one whole
// program: base is the container's own rules (RulesFromSpec + DefaultRules),
// which must not include the nodes hotgpu may revoke, and granted the nodes
// hotgpu has already granted (from the ledger, after a restart).
func (t *Target) Devices(base []*devices.Rule, granted []gpu.DeviceNode) (DeviceAccess, error) {
	if t.DevicesDir != "" {
		return NewV1(t.DevicesDir), nil
	}
	if t.UnifiedDir == "" {
		return nil, ErrNoCgroup
	}
	return NewV2(t.UnifiedDir, base, granted)
}

// GrantMissing grants the nodes access does not allow yet and returns
// them: what a rollback may revoke without taking away access the
// container already had (from its own spec, or an earlier grant).
func GrantMissing(access DeviceAccess, nodes []gpu.DeviceNode) ([]gpu.DeviceNode, error) {
	var missing []gpu.DeviceNode
	for _, n := range nodes {
		has, err := access.Has(n)
		if err != nil {
			return nil, err
		}
		if !has {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if err := access.Grant(missing); err != nil {
		return nil, err
	}
	return missing, nil
}
