package plugin

import (
	"context"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// PostStartContainer learns the container's PID, which live attach needs.
func (p *Plugin) PostStartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.registry.Put(toRegistry(pod, c))
	return nil
}

// StopContainer releases the container's GPUs (its kubelet allocation goes
// back to its pod) and forgets it as a running container: a kubelet
// allocation held by a container that is not in the registry may be taken
// over by kubelet's next allocation (deviceplugin.WithRunning).
func (p *Plugin) StopContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.gone(pod, c)
	p.registry.Remove(c.GetId())
	return nil, nil
}

// RemoveContainer releases the container's GPUs and forgets it.
func (p *Plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.gone(pod, c)
	p.registry.Remove(c.GetId())
	return nil
}

// RemovePodSandbox releases whatever the pod still holds, including kubelet
// allocations kept for restarting containers.
func (p *Plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	released, err := p.ledger.PodGone(pod.GetUid())
	if err != nil {
		p.log.WithError(err).Error("failed to release pod's GPUs")
		return nil
	}
	if len(released) > 0 {
		p.log.WithFields(map[string]any{"pod": pod.GetNamespace() + "/" + pod.GetName(), "gpus": gpusOf(released)}).Info("GPUs released")
	}
	return nil
}

func (p *Plugin) gone(pod *api.PodSandbox, c *api.Container) {
	released, _, err := p.ledger.ContainerGone(c.GetId())
	if err != nil {
		// The grant stays recorded; the next Synchronize releases it.
		p.log.WithError(err).WithField("container", c.GetId()).Error("failed to release GPUs")
		return
	}
	if len(released) > 0 {
		p.log.WithFields(map[string]any{
			"pod": pod.GetNamespace() + "/" + pod.GetName(), "container": c.GetName(), "gpus": gpusOf(released),
		}).Info("GPUs released")
	}
}

// PostUpdateContainer re-checks live grants after the runtime updated the
// container's resources. runc 1.5 leaves device rules alone on update; a
// runtime that re-applies the spec's rules would drop live grants, and this
// puts them back at once instead of at the next periodic reconcile.
func (p *Plugin) PostUpdateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.registry.Put(toRegistry(pod, c))
	if p.afterUpdate != nil {
		p.afterUpdate(c.GetId())
	}
	return nil
}

// Synchronize reconciles the ledger with the containers that really exist:
// grants of containers that are gone are released (but a stopped container
// of a live pod keeps its kubelet allocation, as StopContainer leaves it),
// and containers that carry GPU nodes the ledger does not know (a lost or
// corrupt state file) are recorded again.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, containers []*api.Container) ([]*api.ContainerUpdate, error) {
	podByID := make(map[string]*api.PodSandbox, len(pods))
	podUIDs := make(map[string]bool, len(pods))
	for _, pod := range pods {
		podByID[pod.GetId()] = pod
		podUIDs[pod.GetUid()] = true
	}
	live := make(map[string]bool, len(containers))
	regs := make([]registry.Container, 0, len(containers))
	for _, c := range containers {
		if c.GetState() == api.ContainerState_CONTAINER_STOPPED {
			continue
		}
		live[c.GetId()] = true
		regs = append(regs, toRegistry(podByID[c.GetPodSandboxId()], c))
	}
	p.registry.Replace(regs)
	p.stoppedWhileAway(live, podUIDs)
	released, err := p.ledger.Reconcile(func(id string) bool { return live[id] }, func(uid string) bool { return podUIDs[uid] })
	if err != nil {
		p.log.WithError(err).Error("failed to reconcile ledger")
	} else if len(released) > 0 {
		p.log.WithField("gpus", gpusOf(released)).Info("released GPUs of containers that are gone")
	}
	p.releaseUninjected(containers, live)
	p.rerecord(podByID, containers, live)
	p.log.WithFields(map[string]any{"pods": len(pods), "containers": len(live)}).Info("synchronized with the runtime")
	if p.onSync != nil {
		p.onSync()
	}
	return nil, nil
}

// stoppedWhileAway handles, as StopContainer would have, the containers
// that stopped or were removed while hotgpud was not connected (the runtime
// lists no exited container) but whose pod still exists: their kubelet GPUs
// go back to the pod, for the container kubelet restarts with the same
// allocation, and stay the pod's until kubelet no longer lists it
// (deviceplugin's sweep) or its sandbox is removed. Reconcile then releases
// the grants of pods that are gone.
func (p *Plugin) stoppedWhileAway(live, podUIDs map[string]bool) {
	done := map[string]bool{}
	for _, g := range p.ledger.Grants() {
		id := g.Holder.ContainerID
		if id == "" || live[id] || done[id] || !podUIDs[g.Holder.PodUID] {
			continue
		}
		done[id] = true
		released, unbound, err := p.ledger.ContainerGone(id)
		if err != nil {
			p.log.WithError(err).WithField("container", id).Error("failed to release GPUs of a stopped container")
			continue
		}
		p.log.WithFields(map[string]any{"container": g.Holder.String(), "released": gpusOf(released), "kept_for_pod": gpusOf(unbound)}).
			Info("container stopped while hotgpud was away")
	}
}

// rerecord records GPUs found in running containers' specs that the
// ledger does not hold for them.
func (p *Plugin) rerecord(podByID map[string]*api.PodSandbox, containers []*api.Container, live map[string]bool) {
	inv := p.inv.Inventory()
	for _, c := range containers {
		if !live[c.GetId()] {
			continue
		}
		var missing []string
		for _, g := range devicesOfSpec(inv, c.GetLinux().GetDevices()) {
			if cur, ok := p.ledger.Lookup(g.UUID); ok && cur.Holder.ContainerID == c.GetId() {
				continue
			}
			missing = append(missing, g.UUID)
		}
		if len(missing) == 0 {
			continue
		}
		pod := podByID[c.GetPodSandboxId()]
		reason := ledger.Kubelet
		if _, ok := pod.GetAnnotations()[policy.AnnotationKey(c.GetName())]; ok {
			reason = ledger.Annotation
		}
		if err := p.ledger.Acquire(holderOf(pod, c), reason, ledger.Active, missing...); err != nil {
			p.log.WithError(err).WithField("container", c.GetId()).Error("container has GPUs the ledger gives to another holder")
			continue
		}
		p.log.WithFields(map[string]any{"container": c.GetName(), "gpus": missing}).Info("re-recorded GPUs found in a running container")
	}
}

// devicesOfSpec maps a container's device nodes to the devices it holds: a
// GPU not in MIG mode by its node, a MIG device by its GPU's node and all
// its caps nodes. A GPU in MIG mode is never taken whole from its node: the
// node is its MIG devices' too.
func devicesOfSpec(inv *gpu.Inventory, devs []*api.LinuxDevice) []*gpu.GPU {
	has := map[gpu.DeviceNode]bool{}
	for _, d := range devs {
		if d.GetType() == "c" && strings.HasPrefix(d.GetPath(), "/dev/nvidia") {
			has[gpu.DeviceNode{Path: d.GetPath(), Major: d.GetMajor(), Minor: d.GetMinor()}] = true
		}
	}
	var out []*gpu.GPU
	for i := range inv.GPUs {
		g := &inv.GPUs[i]
		if !g.MIGEnabled && has[g.Node()] {
			out = append(out, g)
		}
	}
	for _, m := range inv.Instances("") {
		if !slices.ContainsFunc(m.Nodes(), func(n gpu.DeviceNode) bool { return !has[n] }) {
			out = append(out, m)
		}
	}
	return out
}

func gpusOf(gs []ledger.Grant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.GPU
	}
	return out
}
