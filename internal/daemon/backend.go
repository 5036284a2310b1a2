package daemon

import (
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/version"
)

// Attach implements apiserver.Backend.
func (d *Daemon) Attach(t attach.Target, ids []string, count int) (*attach.Result, error) {
	if err := d.waitRebuilt(); err != nil {
		return nil, err
	}
	res, err := d.attach.Attach(t, ids, count)
	if err != nil {
		return nil, err
	}
	res.Driver = d.giveDriver(res.Holder)
	return res, nil
}

// AttachMIG implements apiserver.MIGBackend.
func (d *Daemon) AttachMIG(t attach.Target, profile string, count int) (*attach.Result, error) {
	if err := d.waitRebuilt(); err != nil {
		return nil, err
	}
	return d.attach.AttachMIG(t, profile, count)
}

// Detach implements apiserver.Backend.
func (d *Daemon) Detach(t attach.Target, ids []string, force bool) (*attach.Result, error) {
	return d.attach.Detach(t, ids, force)
}

// GPUs implements apiserver.Backend: every GPU, its health and its holder.
func (d *Daemon) GPUs() []api.GPUStatus {
	inv := d.Inventory()
	out := make([]api.GPUStatus, 0, len(inv.GPUs))
	for _, g := range inv.GPUs {
		out = append(out, d.gpuStatus(g))
		for _, m := range g.MIG { // each MIG device is a row of its own, below its GPU
			if rec, ok := inv.ByUUID(m.UUID); ok {
				out = append(out, d.gpuStatus(*rec))
			}
		}
	}
	return out
}

func (d *Daemon) gpuStatus(g gpu.GPU) api.GPUStatus {
	s := api.GPUStatus{GPU: g, Healthy: d.health.Healthy(g.UUID)}
	if grant, ok := d.ledger.Lookup(g.UUID); ok {
		grant.Holder.Token, grant.Holder.Tokens = "", "" // claim secrets; the API never shows them
		s.Grant = &grant
	}
	return s
}

// Status implements apiserver.Backend.
func (d *Daemon) Status() api.Status {
	inv := d.Inventory()
	s := api.Status{
		Version: version.Version, Simulated: inv.Simulated, DriverVersion: inv.DriverVersion, CUDAVersion: inv.CUDAVersion,
		GPUs: len(inv.GPUs), Held: len(d.ledger.Grants()), Unhealthy: d.health.count(),
		Containers: d.registry.Len(), Uptime: time.Since(d.started).Round(time.Second).String(),
		ReconcileInterval: d.cfg.ReconcileInterval.Duration.String(),
	}
	if t := d.lastReconcile.Load(); t != 0 {
		s.LastReconcile = time.Unix(0, t)
	}
	if d.plugin != nil {
		s.NRIConnected = d.plugin.Connected()
	}
	switch {
	case d.devicePlugin == nil:
		s.DevicePlugin = "disabled"
	case d.devicePlugin.Registered():
		s.DevicePlugin = "registered as " + d.devicePlugin.ResourceName()
		for _, p := range d.mig.plugins() {
			if p.Registered() {
				s.DevicePlugin += ", " + p.ResourceName()
			}
		}
	default:
		s.DevicePlugin = "waiting for kubelet at " + d.cfg.DevicePlugin.KubeletDir
	}
	if p, ok := d.cdiPath.Load().(string); ok {
		s.CDISpec = p
	}
	s.Problems = d.destroyedMIG()
	return s
}
