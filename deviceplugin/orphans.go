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

// podGoneGrace is how long kubelet must have stopped listing a pod before
// its GPUs are released: a kubelet that has just restarted serves
// PodResources before its pod list is filled in, and must not be taken for
// every pod being gone.
const podGoneGrace = 5 * time.Second

// SweepOrphans releases kubelet allocations kubelet no longer assigns, by
// asking its PodResources socket (which lists every active pod and its
// devices), and returns the GPUs released:
//
//   - an allocation no container claimed whose GPU kubelet lists for no pod:
//     the pod was deleted before its container started;
//   - the allocation of a pod kubelet has not listed for podGoneGrace, once
//     none of its containers runs: the pod was deleted or has finished. Its
//     absence is timed while its containers are still stopping.
//     kubelet frees its devices at once, while containerd's RemovePodSandbox
//     (which also releases them) waits for kubelet's container GC, up to a
//     minute later.
//
// Without the socket nothing is released. It is called from one goroutine.
func (p *Plugin) SweepOrphans(ctx context.Context, socket string) ([]string, error) {
	candidates := map[string]ledger.Grant{}
	var pods []ledger.Holder // of every pod's allocation: a pod's absence is timed while its containers stop
	inv := p.inv.Inventory()
	for _, g := range p.ledger.Grants() {
		if _, known := inv.ByUUID(g.GPU); known && !p.serves(inv, g.GPU) {
			continue // another resource's (mixed MIG strategy): its plugin judges it
		}
		if p.podGrant(g) {
			pods = append(pods, g.Holder)
		}
		if p.unclaimedOrphan(g) || p.podGrant(g) && (g.Holder.ContainerID == "" || !p.running(g.Holder.ContainerID)) {
			candidates[g.GPU] = g
		}
	}
	if len(pods) == 0 {
		p.podsAbsent = nil
	}
	if len(candidates) == 0 && len(pods) == 0 {
		return nil, nil
	}
	listed, err := p.kubeletAssigned(ctx, socket)
	if err != nil {
		return nil, err
	}
	gone := p.podsGone(pods, listed.pods)
	// Kubelet may have allocated a GPU again while we asked: release only
	// grants that are still exactly the ones judged.
	released, err := p.ledger.ReleaseWhere(func(g ledger.Grant) bool {
		c, ok := candidates[g.GPU]
		if !ok || g != c {
			return false
		}
		if g.Holder.PodUID != "" {
			return gone[g.Holder.PodUID]
		}
		return !listed.devices[g.GPU]
	})
	if err != nil || len(released) == 0 {
		return nil, err
	}
	out := make([]string, len(released))
	for i, g := range released {
		out[i] = g.GPU
	}
	p.log.WithField("gpus", out).Info("released kubelet allocations of pods kubelet no longer runs")
	return out, nil
}

// unclaimedOrphan: an allocation no container of any pod has claimed, old
// enough that kubelet has recorded it.
func (p *Plugin) unclaimedOrphan(g ledger.Grant) bool {
	h := g.Holder
	return g.Reason == ledger.Kubelet && h.ContainerID == "" && h.PodUID == "" && time.Since(g.Since) > orphanGrace
}

// podGrant: an allocation of a pod known by name, judged only while kubelet
// talks to us.
func (p *Plugin) podGrant(g ledger.Grant) bool {
	return g.Reason == ledger.Kubelet && g.Holder.PodUID != "" && g.Holder.PodName != "" && p.Registered()
}

// podsGone returns the pods kubelet has not listed for podGoneGrace, and
// remembers since when the others are missing.
func (p *Plugin) podsGone(pods []ledger.Holder, listed map[string]bool) map[string]bool {
	now := time.Now()
	absent := map[string]time.Time{}
	gone := map[string]bool{}
	for _, h := range pods {
		if listed[h.PodNamespace+"/"+h.PodName] {
			continue
		}
		since, ok := p.podsAbsent[h.PodUID]
		if !ok {
			since = now
		}
		absent[h.PodUID] = since
		gone[h.PodUID] = now.Sub(since) >= podGoneGrace
	}
	p.podsAbsent = absent
	return gone
}

// assigned is what kubelet's PodResources lists: device IDs of our resource
// assigned to active pods, and the active pods ("namespace/name").
type assigned struct {
	devices map[string]bool
	pods    map[string]bool
}

// kubeletAssigned asks kubelet which pods are active and which of our
// devices they hold.
func (p *Plugin) kubeletAssigned(ctx context.Context, socket string) (assigned, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return assigned{}, fmt.Errorf("failed to connect to kubelet's PodResources socket %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := podresources.NewPodResourcesListerClient(conn).List(ctx, &podresources.ListPodResourcesRequest{})
	if err != nil {
		return assigned{}, fmt.Errorf("failed to list pod resources from kubelet at %s: %w", socket, err)
	}
	out := assigned{devices: map[string]bool{}, pods: map[string]bool{}}
	for _, pod := range resp.GetPodResources() {
		out.pods[pod.GetNamespace()+"/"+pod.GetName()] = true
		for _, c := range pod.GetContainers() {
			for _, d := range c.GetDevices() {
				if d.GetResourceName() != p.resource {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					out.devices[id] = true
				}
			}
		}
	}
	return out, nil
}
