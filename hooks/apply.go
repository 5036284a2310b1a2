package hooks

import (
	"errors"
	"fmt"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
)

// apply grants the nodes in the container's device cgroup, one rule per
// node, and creates them in its /dev. On error the container is as before.
func apply(c *container, target *hotplug.Target, gpus []gpu.GPU, control []gpu.DeviceNode) error {
	nodes := make([]gpu.DeviceNode, 0, len(gpus)+len(control))
	for _, g := range gpus {
		nodes = gpu.AppendNodes(nodes, g)
	}
	nodes = append(nodes, control...)

	var specRules []oci.LinuxDeviceCgroup
	if c.spec.Linux != nil && c.spec.Linux.Resources != nil {
		specRules = c.spec.Linux.Resources.Devices
	}
	base, err := hotplug.RulesFromSpec(specRules)
	if err != nil {
		return err
	}
	access, err := target.Devices(append(base, hotplug.DefaultRules()...), nil)
	if err != nil {
		return fmt.Errorf("failed to open the container's device cgroup: %w", err)
	}
	granted, err := hotplug.GrantMissing(access, nodes)
	if err != nil {
		return fmt.Errorf("failed to grant GPU devices: %w", err)
	}
	root, err := openContainerRoot(target.PID, c.rootfs)
	if err != nil {
		return errors.Join(err, revoke(access, granted))
	}
	defer root.Close()
	// In a /dev shared with the host (a bind mount of the host's /dev) the
	// host's own nodes serve the container: the grant is enough, and hotgpu
	// makes nothing there.
	if _, err := hotplug.CreateNodes(fdPath(root), nodes, gpu.NodeMode); err != nil && !errors.Is(err, hotplug.ErrSharedDir) {
		return errors.Join(err, revoke(access, granted))
	}
	return nil
}

func revoke(access hotplug.DeviceAccess, nodes []gpu.DeviceNode) error {
	if len(nodes) == 0 {
		return nil
	}
	if err := access.Revoke(nodes); err != nil {
		return fmt.Errorf("failed to revoke devices during rollback: %w", err)
	}
	return nil
}
