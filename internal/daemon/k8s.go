package daemon

import (
	"context"
	"errors"
	"sync"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/k8s"
)

// newAgent builds the GPUAttachment node agent when there is a Kubernetes
// API to talk to (--kubeconfig, or in a pod); nil, nil when there is none.
func newAgent(cfg *configv1.Config, m *attach.Manager, l *ledger.Ledger, inv k8s.Inventory, log *logrus.Entry) (*k8s.Agent, error) {
	rc, err := k8s.RESTConfig(cfg.Kubernetes.Kubeconfig)
	if errors.Is(err, k8s.ErrNoCluster) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	node, err := k8s.NodeName(cfg.Kubernetes.NodeName)
	if err != nil {
		return nil, err
	}
	ag, err := k8s.New(rc, node, m, l, inv, log)
	if err != nil {
		return nil, err
	}
	ag.SetAnnotationPolicy(policy.Policy{Namespaces: cfg.Annotations.Namespaces, MaxPerContainer: cfg.Annotations.MaxPerContainer})
	ag.UseHolders(cfg.Kubernetes.HolderImage, cfg.DevicePlugin.ResourceName)
	return ag, nil
}

// runAgent runs the agent, if any, until ctx ends.
func (d *Daemon) runAgent(ctx context.Context, wg *sync.WaitGroup) {
	if d.agent == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.agent.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.WithError(err).Error("GPUAttachment agent stopped")
		}
	}()
}
