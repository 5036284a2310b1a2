package daemon

import (
	"context"
	"fmt"
	"sync"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/dra"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/k8s"
)

// newDRA builds the DRA kubelet plugin when dra.enabled; it needs the
// Kubernetes API (kubernetes.kubeconfig, or in a pod).
func (d *Daemon) newDRA() (*dra.Driver, error) {
	if !d.cfg.DRA.Enabled {
		return nil, nil
	}
	rc, err := k8s.RESTConfig(d.cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("dra.enabled needs the Kubernetes API: %w", err)
	}
	node, err := k8s.NodeName(d.cfg.Kubernetes.NodeName)
	if err != nil {
		return nil, err
	}
	spec := func(inv *gpu.Inventory) (*specs.Spec, error) { return d.cdiSpec(inv, d.driver.Load()) }
	cfg := dra.Config{Node: node, KubeletRootDir: d.cfg.DRA.KubeletRootDir, CDIDir: d.cfg.CDI.Dir, REST: rc, Observe: d.metrics.Observe}
	return dra.New(cfg, d.ledger, d.Inventory, spec, d.log.WithField("component", "dra")), nil
}

// runDRA runs the DRA plugin, if any, until ctx ends.
func (d *Daemon) runDRA(ctx context.Context, wg *sync.WaitGroup) {
	if d.dra == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.dra.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.WithError(err).Error("DRA kubelet plugin stopped")
		}
	}()
}
