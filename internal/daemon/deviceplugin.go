package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/deviceplugin"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
	hhealth "github.com/hotgpu/hotgpu/internal/health"
)

// healthOptions turns the config into the tracker's options.
func healthOptions(cfg *configv1.Config) []hhealth.Option {
	return []hhealth.Option{hhealth.WithRecoveryWindow(cfg.Health.RecoveryWindow.Duration)}
}

// newDevicePlugin builds the kubelet device plugin unless it is disabled:
// the one of resourceName (whole GPUs, or MIG devices under the single
// strategy). The plugins of MIG profiles (mixed) follow the inventory: see
// syncMIGPlugins.
func (d *Daemon) newDevicePlugin() error {
	if d.cfg.DevicePlugin.Disabled {
		return nil
	}
	res, err := deviceplugin.Resources(d.cfg.DevicePlugin.MIGStrategy, d.cfg.DevicePlugin.ResourceName, d.cfg.DevicePlugin.MIGResourcePrefix, d.Inventory())
	if err != nil {
		return err
	}
	if d.cfg.DevicePlugin.MIGStrategy == deviceplugin.StrategySingle {
		if problem := deviceplugin.SingleProblem(d.Inventory()); problem != "" {
			d.log.Warn(problem + ": " + d.cfg.DevicePlugin.ResourceName + " advertises no device")
		}
	}
	p, err := d.buildDevicePlugin(res[0])
	if err != nil {
		return err
	}
	d.devicePlugin = p
	return nil
}

// buildDevicePlugin builds the plugin of one resource.
func (d *Daemon) buildDevicePlugin(r deviceplugin.Resource) (*deviceplugin.Plugin, error) {
	return deviceplugin.New(d, d.ledger,
		deviceplugin.WithKubeletDir(d.cfg.DevicePlugin.KubeletDir),
		deviceplugin.WithResourceName(r.Name),
		deviceplugin.WithDevices(r.Devices),
		deviceplugin.WithCDIKind(d.cfg.CDI.Vendor+"/"+d.cfg.CDI.Class),
		deviceplugin.WithHealth(d.health),
		deviceplugin.WithLogger(d.log),
		deviceplugin.WithAllocateGate(d.waitRebuilt),
		deviceplugin.WithRunning(d.containerRunning),
		deviceplugin.WithNear(d.near),
	)
}

// near is the device plugin's WithNear: the GPUs of the target of this
// node's one GPUAttachment whose holder pod waits for kubelet's allocation.
func (d *Daemon) near(size int) []string {
	if d.agent == nil {
		return nil
	}
	return d.agent.Near(size)
}

// containerRunning tells the device plugin whether a container holding a
// kubelet grant still runs. The registry lists the containers the runtime
// has neither stopped nor removed; until the first NRI Synchronize, while
// NRI is down, or without NRI, hotgpud cannot tell, and a holder it cannot
// judge counts as running (it is never dispossessed).
func (d *Daemon) containerRunning(id string) bool {
	select {
	case <-d.Ready:
	default:
		return true
	}
	return d.plugin == nil || !d.plugin.Connected() || d.registry.Has(id)
}

// sweepOrphans releases kubelet allocations of pods kubelet no longer runs,
// every devicePlugin.podResourcesInterval. Without kubelet's PodResources
// socket it does nothing.
func (d *Daemon) sweepOrphans(ctx context.Context) {
	tick := time.NewTicker(d.cfg.DevicePlugin.PodResourcesInterval.Duration)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, p := range append(d.mig.plugins(), d.devicePlugin) {
			if _, err := p.SweepOrphans(ctx, d.cfg.DevicePlugin.PodResourcesSocket); err != nil {
				d.log.WithError(err).WithField("resource", p.ResourceName()).Debug("cannot check kubelet allocations against PodResources")
			}
		}
	}
}

// runHealthAndDevicePlugin starts health recovery, the NVML event watcher
// and the device plugin; they stop when ctx ends.
func (d *Daemon) runHealthAndDevicePlugin(ctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() {
		d.health.Run(ctx, func(uuids []string) {
			d.log.WithField("gpus", uuids).Info("GPUs healthy again: no error within the recovery window")
		})
	})
	if !d.cfg.Health.Disabled {
		if w, err := d.provider.HealthWatcher(d.cfg.Health.IgnoredXids); err != nil {
			d.log.WithError(err).Error("cannot watch NVML error events: every GPU is unhealthy until set healthy by hand; set health.disabled to run unwatched")
			d.markAllUnwatched(err)
		} else {
			d.markUnwatched(w.Unwatched())
			wg.Go(func() { w.Run(ctx, d.onHealthEvent) })
		}
	}
	if d.devicePlugin != nil {
		wg.Go(func() {
			if err := d.devicePlugin.Run(ctx); err != nil {
				d.log.WithError(err).Error("kubelet device plugin stopped; run with --no-device-plugin on nodes without kubelet")
			}
		})
		d.mig.start(ctx, wg)
		d.syncMIGPlugins(d.Inventory())
		wg.Go(func() { d.sweepOrphans(ctx) })
	}
}

// Health implements apiserver.HealthBackend.
func (d *Daemon) Health() []api.HealthStatus {
	bad := map[string]hhealth.Status{}
	for _, s := range d.health.Unhealthy() {
		bad[s.UUID] = s
	}
	inv := d.Inventory()
	out := make([]api.HealthStatus, 0, len(inv.GPUs))
	for _, g := range inv.GPUs {
		s := api.HealthStatus{Index: g.Index, UUID: g.UUID, Healthy: true}
		if b, ok := bad[g.UUID]; ok {
			s.Healthy, s.Reason, s.Manual, s.Fatal, s.Since, s.RecoversAt = false, b.Reason, b.Manual, b.Fatal, b.Since, b.RecoversAt
		}
		out = append(out, s)
	}
	return out
}

// SetHealth implements apiserver.HealthBackend.
func (d *Daemon) SetHealth(req api.HealthSetRequest) (*api.HealthStatus, error) {
	g, err := d.Inventory().Lookup(req.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", apiserver.ErrUnknownGPU, err)
	}
	if req.Healthy && g.Lost != "" {
		return nil, fmt.Errorf("%w: GPU %d is lost (%s): NVML cannot read it, so it cannot be used; reset it (nvidia-smi -r -i %s) or reboot, and hotgpud marks it healthy once NVML reads it again",
			apiserver.ErrRefused, g.Index, g.Lost, g.PCIBusID)
	}
	reason := req.Reason
	if reason == "" && !req.Healthy {
		reason = "marked unhealthy by an operator"
	}
	if d.health.Set(g.UUID, req.Healthy, reason) {
		d.log.WithFields(logrus.Fields{"gpu": g.Index, "uuid": g.UUID, "healthy": req.Healthy, "reason": reason}).Warn("GPU health set by hand")
	}
	for _, s := range d.Health() {
		if s.UUID == g.UUID {
			return &s, nil
		}
	}
	return nil, fmt.Errorf("%w: GPU %s vanished", apiserver.ErrUnknownGPU, req.ID)
}
