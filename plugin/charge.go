package plugin

import (
	"context"

	"github.com/containerd/nri/pkg/api"
)

// Charger charges the GPUs a container gets by annotation to its pod's
// namespace's ResourceQuota (k8s.Agent: a gated charge pod asking for
// them), and takes the charge back.
type Charger interface {
	// Charge reports whether it charged now (false: charged already, by a
	// previous start of the container, or nothing to charge). An error is
	// the refusal (over quota), or the API server's silence: the container
	// is refused then, and nothing changes.
	Charge(ctx context.Context, namespace, podName, podUID, container string, gpus int) (bool, error)
	Uncharge(ctx context.Context, namespace, podName, podUID, container string) error
}

// SetCharger sets who charges annotation GPUs to quota (the Kubernetes
// agent). Without one (no Kubernetes API) nothing is charged: the
// namespace policy and the per-container limit are all that bound them.
func (p *Plugin) SetCharger(c Charger) { p.charger.Store(&c) }

// charge charges the container's annotation GPUs, before they are
// recorded: a refusal leaves the ledger as it was.
func (p *Plugin) charge(ctx context.Context, pod *api.PodSandbox, c *api.Container, n int) (bool, error) {
	ch := p.charger.Load()
	if ch == nil || *ch == nil {
		return false, nil
	}
	return (*ch).Charge(ctx, pod.GetNamespace(), pod.GetName(), pod.GetUid(), c.GetName(), n)
}

// uncharge takes back a charge made for a container that then got no GPU.
func (p *Plugin) uncharge(ctx context.Context, pod *api.PodSandbox, c *api.Container) {
	ch := p.charger.Load()
	if ch == nil || *ch == nil {
		return
	}
	if err := (*ch).Uncharge(ctx, pod.GetNamespace(), pod.GetName(), pod.GetUid(), c.GetName()); err != nil {
		p.log.WithError(err).WithField("container", c.GetName()).Warn("failed to delete a charge pod; the garbage collector deletes it with the pod")
	}
}
