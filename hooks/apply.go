package hooks

import (
	"errors"
	"fmt"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
)

// nodeMode is the mode of the nodes made in the container; the cgroup rule,
// not the mode, decides who may open them, as with the driver's own nodes.
const nodeMode = 0o666

// apply grants the nodes in the container's device cgroup, one rule per
// node, and creates them in its /dev. On error the container is as before.
func apply(c *container, target *hotplug.Target, gpus []gpu.GPU, control []gpu.DeviceNode) error {
	nodes := make([]gpu.DeviceNode, 0, len(gpus)+len(control))
	for _, g := range gpus {
		nodes = append(nodes, g.Node())
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
	if err := access.Grant(nodes); err != nil {
		return fmt.Errorf("failed to grant GPU devices: %w", err)
	}
	root, err := openContainerRoot(target.PID, c.rootfs)
	if err != nil {
		return errors.Join(err, revoke(access, nodes))
	}
	defer root.Close()
	var created []gpu.DeviceNode
	for _, n := range nodes {
		if err := hotplug.CreateNode(fdPath(root), n, nodeMode); err != nil {
			for _, m := range created {
				_ = hotplug.RemoveNode(fdPath(root), m)
			}
			return errors.Join(fmt.Errorf("failed to create %s in the container: %w", n.Path, err), revoke(access, nodes))
		}
		created = append(created, n)
	}
	return nil
}

func revoke(access hotplug.DeviceAccess, nodes []gpu.DeviceNode) error {
	if err := access.Revoke(nodes); err != nil {
		return fmt.Errorf("failed to revoke devices during rollback: %w", err)
	}
	return nil
}
