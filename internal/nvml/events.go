package nvml

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// EventKind is what NVML reported.
type EventKind int

// Event kinds hotgpu watches. Single-bit ECC errors are corrected by the
// hardware and not watched.
const (
	XidError     EventKind = iota + 1 // a critical Xid not in the ignore list
	DoubleBitECC                      // an uncorrectable memory error
	GPULost                           // NVML lost the GPU (fell off the bus)
	WaitFailed                        // waiting for events failed; no GPU could be blamed
	// MIGLayoutChanged is no error: MIG devices were created or destroyed
	// on the GPU, and the inventory must be read again.
	MIGLayoutChanged
)

// Event is one error NVML reported.
type Event struct {
	// UUID is the GPU's; empty when NVML could not say which GPU, in which
	// case every GPU must be treated as affected (as NVIDIA's plugin does).
	UUID string
	Kind EventKind
	Xid  uint64 // for XidError
	// Detail is NVML's result for WaitFailed.
	Detail string
}

// Reason says what happened, for logs, `hotgpu health` and kubelet users.
func (e Event) Reason() string {
	switch e.Kind {
	case XidError:
		return fmt.Sprintf("Xid %d", e.Xid)
	case DoubleBitECC:
		return "double-bit ECC error"
	case GPULost:
		return "GPU lost"
	case WaitFailed:
		return "waiting for NVML error events failed: " + e.Detail
	case MIGLayoutChanged:
		return "MIG layout changed"
	}
	return "unknown NVML event"
}

// DefaultIgnoredXids are the Xids NVIDIA's device plugin treats as
// application errors rather than GPU faults: 13 (graphics engine
// exception), 31 (GPU memory page fault), 43 (GPU stopped processing), 45
// (preemptive cleanup), 68 (video processor exception) and 109 (context
// switch timeout). A buggy CUDA program causes them; the GPU is fine.
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

const watchedEvents = uint64(nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventMigConfigChange)

// HealthWatcher delivers the Xid and double-bit ECC events of every GPU.
type HealthWatcher struct {
	p         *Provider
	set       nvml.EventSet
	ignored   []uint64
	uuids     []string               // by NVML index; "" where unreadable
	handles   map[nvml.Device]string // registered handle -> UUID
	unwatched []Unwatched
	// wait is one Wait call: NVML's Wait cannot be interrupted, so it bounds
	// how late ctx is noticed, i.e. hotgpud's shutdown time. One wakeup a
	// second costs nothing measurable.
	wait    time.Duration
	backoff time.Duration // after a failed Wait, so a broken set never spins
}

// Unwatched is a GPU whose errors NVML cannot deliver, and why. Its health
// cannot be known, so it must not be taken for healthy.
type Unwatched struct {
	Index  int
	UUID   string // "" when NVML cannot read it
	Reason string
}

// HealthWatcher registers for error events on every GPU. ignoredXids are
// never reported (use DefaultIgnoredXids unless configured otherwise). A GPU
// that cannot deliver Xid events, or fails to register, does not stop the
// others from being watched: Unwatched lists it with the reason.
func (p *Provider) HealthWatcher(ignoredXids []uint64) (*HealthWatcher, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	set, ret := p.lib.EventSetCreate()
	if err := check(ret, "create NVML event set"); err != nil {
		return nil, err
	}
	w := &HealthWatcher{p: p, set: set, ignored: slices.Clone(ignoredXids), handles: map[nvml.Device]string{},
		wait: time.Second, backoff: time.Second}
	n, ret := p.lib.DeviceGetCount()
	if err := check(ret, "count GPUs"); err != nil {
		set.Free()
		return nil, err
	}
	for i := range n {
		uuid, reason := w.register(i)
		w.uuids = append(w.uuids, uuid)
		if reason != "" {
			w.unwatched = append(w.unwatched, Unwatched{Index: i, UUID: uuid, Reason: reason})
		}
	}
	return w, nil
}

// register subscribes GPU i to the watched events. It returns the GPU's
// UUID and, when the GPU cannot be watched, why.
func (w *HealthWatcher) register(i int) (uuid, reason string) {
	d, ret := w.p.lib.DeviceGetHandleByIndex(i)
	if err := check(ret, "get handle of GPU %d", i); err != nil {
		return "", err.Error()
	}
	uuid, ret = d.GetUUID()
	if err := check(ret, "get UUID of GPU %d", i); err != nil {
		return "", err.Error()
	}
	supported, ret := d.GetSupportedEventTypes()
	if err := check(ret, "get event types of GPU %d", i); err != nil {
		return uuid, "its error events cannot be watched: " + err.Error()
	}
	if supported&nvml.EventTypeXidCriticalError == 0 {
		return uuid, fmt.Sprintf("its error events cannot be watched: NVML delivers no Xid events for it (supported event types %#x)", supported)
	}
	ret = d.RegisterEvents(supported&watchedEvents, w.set)
	if err := check(ret, "register error events of GPU %d", i); err != nil {
		return uuid, "its error events cannot be watched: " + err.Error()
	}
	w.handles[d] = uuid
	return uuid, ""
}

// Unwatched lists the GPUs whose errors cannot be watched.
func (w *HealthWatcher) Unwatched() []Unwatched { return slices.Clone(w.unwatched) }

// Run calls fn for every event that is not ignored until ctx ends, then
// frees the event set. A failed Wait is blamed on the GPUs that no longer
// answer (GPULost each); when none can be blamed, fn gets one WaitFailed
// event for every GPU: their errors are not being watched.
func (w *HealthWatcher) Run(ctx context.Context, fn func(Event)) {
	defer w.set.Free()
	for ctx.Err() == nil {
		data, ret := w.set.Wait(uint32(w.wait / time.Millisecond))
		switch ret {
		case nvml.SUCCESS:
			if e, ok := w.event(data); ok {
				fn(e)
			}
		case nvml.ERROR_TIMEOUT:
		default:
			for _, e := range w.waitFailed(ret) {
				fn(e)
			}
			sleep(ctx, w.backoff)
		}
	}
}

// waitFailed finds the GPUs that no longer answer after Wait failed with ret.
func (w *HealthWatcher) waitFailed(ret nvml.Return) []Event {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	var out []Event
	for i, uuid := range w.uuids {
		if uuid != "" && w.p.probe(i) != nil {
			out = append(out, Event{UUID: uuid, Kind: GPULost})
		}
	}
	if len(out) == 0 {
		out = append(out, Event{Kind: WaitFailed, Detail: ret.Error()})
	}
	return out
}

// probe asks GPU i something only a GPU on the bus can answer; it returns
// the error when the GPU is broken (see brokenGPU). Call with p.mu held.
func (p *Provider) probe(i int) error {
	d, ret := p.lib.DeviceGetHandleByIndex(i)
	if err := check(ret, "get handle of GPU %d", i); err != nil {
		return err
	}
	_, ret = d.GetMemoryInfo()
	if err := check(ret, "get memory size of GPU %d", i); isBroken(err) {
		return err
	}
	return nil
}

// event turns NVML's event data into an Event, or false when it is ignored.
func (w *HealthWatcher) event(data nvml.EventData) (Event, bool) {
	var e Event
	switch {
	case data.EventType&nvml.EventTypeXidCriticalError != 0:
		if slices.Contains(w.ignored, data.EventData) {
			return e, false
		}
		e.Kind, e.Xid = XidError, data.EventData
	case data.EventType&nvml.EventTypeDoubleBitEccError != 0:
		e.Kind = DoubleBitECC
	case data.EventType&nvml.EventMigConfigChange != 0:
		e.Kind = MIGLayoutChanged
	default:
		return e, false
	}
	if uuid, ok := w.handles[data.Device]; ok && data.Device != nil {
		e.UUID = uuid // known without asking a GPU that may be lost
	} else if data.Device != nil {
		w.p.mu.Lock()
		uuid, ret := data.Device.GetUUID()
		w.p.mu.Unlock()
		if ret == nvml.SUCCESS {
			e.UUID = uuid
		}
	}
	return e, true
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
