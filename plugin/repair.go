package plugin

import (
	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// WithFailpoint installs f, called with the name of each step of
// CreateContainer ("create-recorded": the ledger records the GPUs, the
// adjustment is not yet returned); a non-nil error aborts there. Test builds
// use it to kill hotgpud at that moment (internal/daemon/failpoints.go).
func WithFailpoint(f func(step string) error) Option {
	return func(p *Plugin) error { p.fail = f; return nil }
}

func (p *Plugin) step(name string) error {
	if p.fail == nil {
		return nil
	}
	return p.fail(name)
}

// releaseUninjected frees annotation grants of running containers that do
// not have the GPU's node. That happens when hotgpud recorded the GPUs in
// CreateContainer and then died or timed out before answering: the runtime
// goes on without the plugin (NRI's default failure policy) and creates the
// container with no GPU, while the ledger still says it holds one.
func (p *Plugin) releaseUninjected(containers []*api.Container, live map[string]bool) {
	inv := p.inv.Inventory()
	for _, c := range containers {
		if !live[c.GetId()] {
			continue
		}
		has := map[string]bool{}
		for _, g := range devicesOfSpec(inv, c.GetLinux().GetDevices()) {
			has[g.UUID] = true
		}
		var stale []string
		for _, g := range p.ledger.Container(c.GetId()) {
			if g.Reason == ledger.Annotation && !has[g.GPU] {
				stale = append(stale, g.GPU)
			}
		}
		if len(stale) == 0 {
			continue
		}
		if _, err := p.ledger.Release(c.GetId(), stale...); err != nil {
			p.log.WithError(err).WithField("container", c.GetId()).Error("failed to release GPUs the container never got")
			continue
		}
		p.log.WithFields(map[string]any{"container": c.GetName(), "gpus": stale}).
			Warn("released GPUs recorded for a container that was created without them (hotgpud died or timed out in CreateContainer)")
	}
}
