package nvml

import (
	"context"
	"errors"
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
)

// Event is one error NVML reported.
type Event struct {
	// UUID is the GPU's; empty when NVML could not say which GPU, in which
	// case every GPU must be treated as affected (as NVIDIA's plugin does).
	UUID string
	Kind EventKind
	Xid  uint64 // for XidError
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
	}
	return "unknown NVML event"
}

// DefaultIgnoredXids are the Xids NVIDIA's device plugin treats as
// application errors rather than GPU faults: 13 (graphics engine
// exception), 31 (GPU memory page fault), 43 (GPU stopped processing), 45
// (preemptive cleanup), 68 (video processor exception) and 109 (context
// switch timeout). A buggy CUDA program causes them; the GPU is fine.
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

const watchedEvents = uint64(nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError)

// HealthWatcher delivers the Xid and double-bit ECC events of every GPU.
type HealthWatcher struct {
	p           *Provider
	set         nvml.EventSet
	ignored     []uint64
	unsupported []string
	// wait is one Wait call: NVML's Wait cannot be interrupted, so it bounds
	// how late ctx is noticed, i.e. hotgpud's shutdown time. One wakeup a
	// second costs nothing measurable.
	wait    time.Duration
	backoff time.Duration // after a failed Wait, so a broken set never spins
}

// HealthWatcher registers for error events on every GPU. ignoredXids are
// never reported (use DefaultIgnoredXids unless configured otherwise). GPUs
// that cannot deliver events are listed by Unsupported and not watched.
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
	w := &HealthWatcher{p: p, set: set, ignored: slices.Clone(ignoredXids), wait: time.Second, backoff: time.Second}
	n, ret := p.lib.DeviceGetCount()
	if err := check(ret, "count GPUs"); err != nil {
		set.Free()
		return nil, err
	}
	for i := range n {
		if err := w.register(i); err != nil {
			set.Free()
			return nil, err
		}
	}
	return w, nil
}

// register subscribes GPU i to the watched events it supports.
func (w *HealthWatcher) register(i int) error {
	d, ret := w.p.lib.DeviceGetHandleByIndex(i)
	if err := check(ret, "get handle of GPU %d", i); err != nil {
		return err
	}
	uuid, ret := d.GetUUID()
	if err := check(ret, "get UUID of GPU %d", i); err != nil {
		return err
	}
	supported, ret := d.GetSupportedEventTypes()
	if ret == nvml.ERROR_NOT_SUPPORTED || supported&watchedEvents == 0 {
		w.unsupported = append(w.unsupported, uuid)
		return nil
	}
	if err := check(ret, "get event types of GPU %d", i); err != nil {
		return err
	}
	ret = d.RegisterEvents(supported&watchedEvents, w.set)
	if ret == nvml.ERROR_NOT_SUPPORTED {
		w.unsupported = append(w.unsupported, uuid)
		return nil
	}
	return check(ret, "register events of GPU %d", i)
}

// Unsupported lists the UUIDs of GPUs whose health cannot be watched.
func (w *HealthWatcher) Unsupported() []string { return slices.Clone(w.unsupported) }

// Run calls fn for every event that is not ignored until ctx ends, then
// frees the event set.
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
		case nvml.ERROR_GPU_IS_LOST:
			fn(Event{Kind: GPULost})
			sleep(ctx, w.backoff)
		default:
			sleep(ctx, w.backoff)
		}
	}
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
	default:
		return e, false
	}
	if data.Device != nil {
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

// ErrNoEvents is returned by Sim.InjectEvent when no HealthWatcher listens.
var ErrNoEvents = errors.New("no health watcher is registered for events")
