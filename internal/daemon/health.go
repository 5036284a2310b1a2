package daemon

import (
	"slices"
	"strconv"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/gpu"
	hhealth "github.com/hotgpu/hotgpu/internal/health"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// health tracks which GPUs may be handed out (internal/health): NVML error
// events, lost GPUs in the inventory and `hotgpu health set` change it,
// everything that hands out GPUs reads it.
type health struct {
	*hhealth.Tracker
	mu sync.Mutex
	// unwatched holds, by NVML index, why the health watcher could not
	// register a GPU. The watcher registers once, at start: a GPU that was
	// lost then and comes back later is still not watched.
	unwatched map[int]string
	// inv is the current inventory, for the parents of MIG instances.
	inv func() *gpu.Inventory
}

// Healthy reports whether a device may be handed out. A MIG instance is as
// healthy as its parent too: NVML reports Xids on the parent GPU.
func (h *health) Healthy(uuid string) bool {
	if !h.Tracker.Healthy(uuid) {
		return false
	}
	if h.inv == nil {
		return true
	}
	if g, ok := h.inv().ByUUID(uuid); ok && g.ParentUUID != "" {
		return h.Tracker.Healthy(g.ParentUUID)
	}
	return true
}

func newHealth(opts ...hhealth.Option) *health {
	return &health{Tracker: hhealth.New(opts...), unwatched: map[int]string{}}
}

func (h *health) unwatchedReason(index int) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.unwatched[index]
	return r, ok
}

func (h *health) count() int { return h.Count() }

// lostReason is the health reason of a GPU NVML counts but cannot read.
func lostReason(g gpu.GPU) string { return "GPU lost: " + g.Lost }

// trackLost keeps every lost GPU of inv unhealthy (fatal: it needs a reset)
// and clears the mark of a GPU that was lost in old and that NVML reads
// again: it was reset or re-seated. Call it before inv is published, so no
// path ever sees a lost GPU as healthy.
func (d *Daemon) trackLost(old, inv *gpu.Inventory) {
	for _, g := range inv.GPUs {
		if g.Lost != "" && d.health.ReportFatal(g.UUID, lostReason(g)) {
			d.log.WithFields(logrus.Fields{"gpu": g.Index, "uuid": g.UUID, "pci": g.PCIBusID, "error": g.Lost}).
				Error("GPU lost: NVML counts it but cannot read it; it is unhealthy until it is reset (nvidia-smi -r) or the node reboots")
		}
	}
	if old == nil {
		return
	}
	for _, g := range old.GPUs {
		if g.Lost == "" {
			continue
		}
		if now, ok := inv.ByUUID(g.UUID); ok && now.Lost != "" {
			continue
		}
		back, _ := inv.Lookup(strconv.Itoa(g.Index))
		cleared := d.health.Clear(g.UUID)
		if reason, ok := d.health.unwatchedReason(g.Index); ok && back != nil {
			d.health.ReportFatal(back.UUID, "health not watched: "+reason+"; restart hotgpud to watch it")
			d.log.WithFields(logrus.Fields{"gpu": g.Index, "uuid": back.UUID}).
				Warn("a lost GPU answers NVML again, but its errors are not watched (it was lost when hotgpud started): restart hotgpud")
		} else if cleared {
			d.log.WithFields(logrus.Fields{"gpu": g.Index, "uuid": g.UUID}).Warn("a lost GPU answers NVML again: marked healthy")
		}
	}
}

// markUnwatched makes unhealthy the GPUs whose errors NVML cannot deliver:
// their health cannot be known, and a GPU is never healthy by default. A
// lost GPU keeps its "GPU lost" mark; it is remembered for when it is back.
func (d *Daemon) markUnwatched(unwatched []nvml.Unwatched) {
	inv := d.Inventory()
	for _, u := range unwatched {
		d.health.mu.Lock()
		d.health.unwatched[u.Index] = u.Reason
		d.health.mu.Unlock()
		var g *gpu.GPU
		if u.Index < len(inv.GPUs) {
			g = &inv.GPUs[u.Index]
		}
		if g != nil && g.Lost != "" {
			continue
		}
		uuid := u.UUID
		if uuid == "" && g != nil {
			uuid = g.UUID
		}
		if uuid == "" {
			continue
		}
		d.health.ReportFatal(uuid, "health not watched: "+u.Reason)
		d.log.WithFields(logrus.Fields{"gpu": u.Index, "uuid": uuid, "reason": u.Reason}).
			Warn("GPU marked unhealthy: its NVML error events cannot be watched; `hotgpu health set` to accept it unwatched")
	}
}

// fatal reports whether an NVML event needs a GPU reset (or a reboot)
// before the GPU may be trusted again.
func fatal(e nvml.Event) bool {
	switch e.Kind {
	case nvml.GPULost, nvml.DoubleBitECC:
		return true
	case nvml.XidError:
		return slices.Contains(hhealth.FatalXids, e.Xid)
	}
	return false
}

// onHealthEvent marks the GPU (or, when NVML could not say which, every
// GPU) unhealthy: until a reset for a fatal error, until its recovery
// window passes for the others.
func (d *Daemon) onHealthEvent(e nvml.Event) {
	if e.Kind == nvml.MIGLayoutChanged {
		d.log.WithField("gpu", e.UUID).Info("NVML reports a MIG layout change: reading the inventory again")
		d.requestRefresh()
		return
	}
	uuids := []string{e.UUID}
	if e.UUID == "" {
		uuids = uuids[:0]
		for _, g := range d.Inventory().GPUs {
			uuids = append(uuids, g.UUID)
		}
	}
	isFatal := fatal(e)
	changed := false
	for _, u := range uuids {
		if isFatal {
			changed = d.health.ReportFatal(u, e.Reason()) || changed
		} else {
			// A broken event set fails every Wait: log it once per GPU.
			changed = changed || e.Kind != nvml.WaitFailed || d.health.Healthy(u)
			d.health.Report(u, e.Reason())
		}
	}
	if !changed {
		return // a repeated report of the same failure
	}
	msg := "GPU error: marked unhealthy until a quiet recovery window passes"
	if isFatal {
		msg = "GPU error that needs a GPU reset or a reboot: marked unhealthy until it is reset (then `hotgpu health set ID healthy`)"
	}
	d.log.WithFields(logrus.Fields{"gpus": uuids, "reason": e.Reason()}).Warn(msg)
}

// warnProblems logs what the node lacks for containers to use its GPUs (a
// kernel module not loaded, ...) when it is new since old.
func (d *Daemon) warnProblems(old, inv *gpu.Inventory) {
	for _, p := range inv.Problems {
		if old == nil || !slices.Contains(old.Problems, p) {
			d.log.Warn(p)
		}
	}
}

// markAllUnwatched marks every GPU unwatched when no event set can be made.
func (d *Daemon) markAllUnwatched(err error) {
	var all []nvml.Unwatched
	for _, g := range d.Inventory().GPUs {
		all = append(all, nvml.Unwatched{Index: g.Index, UUID: g.UUID, Reason: "its error events cannot be watched: " + err.Error()})
	}
	d.markUnwatched(all)
}
