package deviceplugin

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// orphanGrace is how old an unclaimed allocation must be before the sweep
// may release it: kubelet records the pod's devices right after Allocate,
// and this margin keeps a sweep from racing that.
const orphanGrace = 2 * time.Minute

// SweepOrphans releases kubelet allocations that no container claimed and
// that kubelet no longer assigns to any pod (it lists every active pod's
// devices on its PodResources socket): the GPUs of a pod deleted before its
// container started. Without it they would stay withheld from annotations
// and live attach until kubelet happened to allocate them again. It returns
// the GPUs released; a kubelet without the socket means nothing is released.
func (p *Plugin) SweepOrphans(ctx context.Context, socket string) ([]string, error) {
	unclaimed := func(g ledger.Grant) bool {
		h := g.Holder
		return g.Reason == ledger.Kubelet && h.ContainerID == "" && h.PodUID == "" && time.Since(g.Since) > orphanGrace
	}
	candidates := map[string]ledger.Grant{}
	for _, g := range p.ledger.Grants() {
		if unclaimed(g) {
			candidates[g.GPU] = g
		}
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	assigned, err := p.kubeletAssigned(ctx, socket)
	if err != nil {
		return nil, err
	}
	// Kubelet may have allocated a GPU again while we asked: release only
	// grants that are still exactly the ones kubelet no longer lists.
	released, err := p.ledger.ReleaseWhere(func(g ledger.Grant) bool {
		c, ok := candidates[g.GPU]
		return ok && !assigned[g.GPU] && g == c
	})
	if err != nil || len(released) == 0 {
		return nil, err
	}
	orphans := make([]string, len(released))
	for i, g := range released {
		orphans[i] = g.GPU
	}
	p.log.WithField("gpus", orphans).Info("released kubelet allocations whose pod is gone before its container started")
	return orphans, nil
}

// kubeletAssigned returns the device IDs of our resource kubelet assigns to
// its active pods.
func (p *Plugin) kubeletAssigned(ctx context.Context, socket string) (map[string]bool, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("failed to connect to kubelet's PodResources socket %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := podresources.NewPodResourcesListerClient(conn).List(ctx, &podresources.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("failed to list pod resources from kubelet at %s: %w", socket, err)
	}
	out := map[string]bool{}
	for _, pod := range resp.GetPodResources() {
		for _, c := range pod.GetContainers() {
			for _, d := range c.GetDevices() {
				if d.GetResourceName() != p.resource {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					out[id] = true
				}
			}
		}
	}
	return out, nil
}
