package deviceplugin

import (
	"slices"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// devices is what kubelet may allocate now, one entry per device, by UUID.
// Under MIG strategy none a GPU with MIG enabled is no whole GPU (CUDA in a
// pod given it would find no usable device), so the selector leaves it out.
func (p *Plugin) devices() []*pluginapi.Device {
	devs := p.selector(p.inv.Inventory())
	out := make([]*pluginapi.Device, 0, len(devs))
	for _, g := range devs {
		out = append(out, &pluginapi.Device{ID: g.UUID, Health: p.state(g)})
	}
	return out
}

// healthy reports whether a device is healthy: a MIG device is unhealthy
// too while its parent is (NVML reports Xids on the parent GPU).
func (p *Plugin) healthy(g *gpu.GPU) bool {
	return p.health.Healthy(g.UUID) && (g.ParentUUID == "" || p.health.Healthy(g.ParentUUID))
}

// serves reports whether uuid is one of the devices the plugin advertises.
func (p *Plugin) serves(inv *gpu.Inventory, uuid string) bool {
	return slices.ContainsFunc(p.selector(inv), func(g *gpu.GPU) bool { return g.UUID == uuid })
}

// state is Healthy when kubelet may own the GPU: it is healthy and either
// free or kubelet's own. A GPU held by live attach or an annotation is
// Unhealthy, not omitted: kubelet then keeps it in the node's capacity
// (the hardware is there) but out of allocatable, and gets it back the
// moment the holder releases it.
func (p *Plugin) state(g *gpu.GPU) string {
	uuid := g.UUID
	if !p.healthy(g) {
		return pluginapi.Unhealthy
	}
	if g, held := p.ledger.Lookup(uuid); held && g.Reason != ledger.Kubelet {
		return pluginapi.Unhealthy
	} else if !held && p.ledger.HeldBy(uuid) != "" {
		return pluginapi.Unhealthy // its MIG parent or a MIG device of it is held
	}
	return pluginapi.Healthy
}

// Refresh tells kubelet the device list again now: the inventory changed
// (a MIG layout change) and the next resync is not soon enough.
func (p *Plugin) Refresh() {
	p.changedMu.Lock()
	defer p.changedMu.Unlock()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

func (p *Plugin) refreshed() <-chan struct{} {
	p.changedMu.Lock()
	defer p.changedMu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// ListAndWatch sends the device list now and again whenever it changes:
// at once on ledger and health changes and on Refresh, and on every resync
// for GPUs that appeared or vanished from the inventory.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	p.streams.Add(1)
	defer func() {
		p.streams.Add(-1)
		select { // kubelet closed the stream: check the registration now
		case p.lost <- struct{}{}:
		default:
		}
	}()
	ledgerCh, unsubLedger := p.ledger.Subscribe()
	defer unsubLedger()
	healthCh, unsubHealth := p.health.Subscribe()
	defer unsubHealth()
	tick := time.NewTicker(p.resync)
	defer tick.Stop()
	var last []*pluginapi.Device
	for {
		refresh := p.refreshed()
		devs := p.devices()
		if last == nil || !sameDevices(last, devs) {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
				return err
			}
			p.log.WithField("devices", summary(devs)).Debug("sent device list to kubelet")
			last = devs
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ledgerCh:
		case <-healthCh:
		case <-refresh:
		case <-tick.C:
		}
	}
}

func sameDevices(a, b []*pluginapi.Device) bool {
	return slices.EqualFunc(a, b, func(x, y *pluginapi.Device) bool { return x.ID == y.ID && x.Health == y.Health })
}

func summary(devs []*pluginapi.Device) map[string]int {
	out := map[string]int{}
	for _, d := range devs {
		out[d.Health]++
	}
	return out
}
