package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/deviceplugin"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// migPlugins are the device plugins of the MIG profiles under the mixed
// strategy, one per profile the node has (nvidia.com/mig-1g.5gb, ...): a
// MIG layout change adds the plugins of new profiles and stops those of
// profiles that are gone, while the others keep running.
type migPlugins struct {
	mu      sync.Mutex
	ctx     context.Context // nil until start: plugins are built, not run
	wg      *sync.WaitGroup
	running map[string]*migPlugin // by resource name
}

type migPlugin struct {
	p    *deviceplugin.Plugin
	stop context.CancelFunc
}

func (m *migPlugins) start(ctx context.Context, wg *sync.WaitGroup) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx, m.wg = ctx, wg
}

// plugins lists the running MIG plugins.
func (m *migPlugins) plugins() []*deviceplugin.Plugin {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*deviceplugin.Plugin, 0, len(m.running))
	for _, r := range m.running {
		out = append(out, r.p)
	}
	return out
}

// syncMIGPlugins runs a plugin for every MIG profile of inv under the
// mixed strategy and stops the plugins of profiles inv no longer has.
func (d *Daemon) syncMIGPlugins(inv *gpu.Inventory) {
	if d.devicePlugin == nil || d.cfg.DevicePlugin.MIGStrategy != deviceplugin.StrategyMixed {
		return
	}
	res, err := deviceplugin.Resources(deviceplugin.StrategyMixed, d.cfg.DevicePlugin.ResourceName, d.cfg.DevicePlugin.MIGResourcePrefix, inv)
	if err != nil {
		d.log.WithError(err).Error("cannot list the MIG resources")
		return
	}
	m := &d.mig
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return
	}
	if m.running == nil {
		m.running = map[string]*migPlugin{}
	}
	want := map[string]bool{}
	for _, r := range res[1:] {
		want[r.Name] = true
		if m.running[r.Name] != nil {
			continue
		}
		p, err := d.buildDevicePlugin(r)
		if err != nil {
			d.log.WithError(err).WithField("resource", r.Name).Error("cannot serve a MIG profile")
			continue
		}
		ctx, stop := context.WithCancel(m.ctx)
		m.running[r.Name] = &migPlugin{p: p, stop: stop}
		m.wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				d.log.WithError(err).WithField("resource", r.Name).Error("kubelet device plugin of a MIG profile stopped")
			}
		})
		d.log.WithField("resource", r.Name).Info("serving MIG devices to kubelet")
	}
	for name, r := range m.running {
		if !want[name] {
			r.stop()
			delete(m.running, name)
			d.log.WithField("resource", name).Info("the node has no MIG device of this profile any more: its device plugin stopped")
		}
	}
}

// requestRefresh has loop read the inventory again as soon as it can.
func (d *Daemon) requestRefresh() {
	select {
	case d.refresh <- struct{}{}:
	default: // one queued refresh reads every change
	}
}

// reportDestroyedMIG reports the held MIG devices that a MIG layout change
// destroyed (they were in old and are not in inv): hotgpu never destroys a
// MIG device and cannot stop the driver from doing so, but it must not
// hide it. Their grants stay until their holders release them, so nobody
// else is given a device the holder still thinks it has.
func (d *Daemon) reportDestroyedMIG(old, inv *gpu.Inventory) {
	var n int
	for _, g := range d.ledger.Grants() {
		was, ok := old.ByUUID(g.GPU)
		if !ok || was.Instance == nil {
			continue
		}
		if _, still := inv.ByUUID(g.GPU); still {
			continue
		}
		n++
		d.log.WithFields(logrus.Fields{"mig": was.ID(), "uuid": g.GPU, "profile": was.Instance.Profile, "holder": g.Holder.String(), "reason": g.Reason}).
			Error("a MIG layout change destroyed a MIG device that is held: its holder has lost it (see hotgpu status)")
	}
	d.metrics.MIGHeldDestroyed(n)
}

// destroyedMIG says, for `hotgpu status`, which held MIG devices the node
// no longer has.
func (d *Daemon) destroyedMIG() []string {
	inv := d.Inventory()
	var out []string
	for _, g := range d.ledger.Grants() {
		if _, ok := inv.ByUUID(g.GPU); ok || !strings.HasPrefix(g.GPU, "MIG-") {
			continue
		}
		out = append(out, fmt.Sprintf("MIG device %s, held by %s (%s), was destroyed by a MIG layout change; detach it (hotgpu detach) or end its pod", g.GPU, g.Holder, g.Reason))
	}
	return out
}

// simulateMIG puts simulated GPUs in MIG mode: entries "<slot>=<profile>,...".
func simulateMIG(p *nvml.Provider, entries []string) error {
	for _, e := range entries {
		slot, profiles, _ := strings.Cut(e, "=")
		if err := p.Simulation().EnableMIG(strings.TrimSpace(slot), strings.Split(profiles, ",")...); err != nil {
			return fmt.Errorf("simulateMIG %q: %w", e, err)
		}
	}
	return nil
}
