package nvml

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/hotgpu/hotgpu/internal/nvml/sim"
)

type waitResult struct {
	data nvml.EventData
	ret  nvml.Return
}

// scriptEvents makes the mock's event sets answer Wait from script, then
// cancel the watcher.
func scriptEvents(p *Provider, script []waitResult, cancel func()) {
	p.sim.Server().EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		i := 0
		return &mock.EventSet{
			WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
				if i == len(script) {
					cancel()
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
				i++
				return script[i-1].data, script[i-1].ret
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
}

func TestHealthWatcherOnMock(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	gpu2 := p.sim.Slot(2)
	xid := func(n uint64) waitResult {
		return waitResult{nvml.EventData{Device: gpu2, EventType: nvml.EventTypeXidCriticalError, EventData: n}, nvml.SUCCESS}
	}
	tests := []struct {
		name    string
		ignored []uint64
		script  []waitResult
		want    []Event
	}{
		{"critical Xid", DefaultIgnoredXids, []waitResult{xid(79)}, []Event{{UUID: gpu2.UUID, Kind: XidError, Xid: 79}}},
		{"application Xids are ignored", DefaultIgnoredXids, []waitResult{xid(13), xid(31), xid(43), xid(45), xid(68), xid(109)}, nil},
		{"configured ignore list replaces the default", []uint64{79}, []waitResult{xid(79), xid(13)}, []Event{{UUID: gpu2.UUID, Kind: XidError, Xid: 13}}},
		{"double-bit ECC", DefaultIgnoredXids, []waitResult{{nvml.EventData{Device: gpu2, EventType: nvml.EventTypeDoubleBitEccError}, nvml.SUCCESS}},
			[]Event{{UUID: gpu2.UUID, Kind: DoubleBitECC}}},
		{"event without a device affects every GPU", DefaultIgnoredXids, []waitResult{{nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 79}, nvml.SUCCESS}},
			[]Event{{Kind: XidError, Xid: 79}}},
		{"a failed wait no GPU is to blame for affects every GPU", DefaultIgnoredXids, []waitResult{{ret: nvml.ERROR_GPU_IS_LOST}},
			[]Event{{Kind: WaitFailed, Detail: "ERROR_GPU_IS_LOST"}}},
		{"timeouts report nothing, errors are not silent", DefaultIgnoredXids, []waitResult{{ret: nvml.ERROR_TIMEOUT}, {ret: nvml.ERROR_UNKNOWN}, xid(79)},
			[]Event{{Kind: WaitFailed, Detail: "ERROR_UNKNOWN"}, {UUID: gpu2.UUID, Kind: XidError, Xid: 79}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			scriptEvents(p, tt.script, cancel)
			w, err := p.HealthWatcher(tt.ignored)
			if err != nil {
				t.Fatal(err)
			}
			w.backoff = time.Millisecond
			var got []Event
			w.Run(ctx, func(e Event) { got = append(got, e) })
			if !slices.Equal(got, tt.want) {
				t.Fatalf("events = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestHealthWatcherUnwatchedGPUs: a GPU whose errors cannot be watched is
// listed with the reason (so the daemon can mark it unhealthy) and does not
// stop the others from being watched.
func TestHealthWatcherUnwatchedGPUs(t *testing.T) {
	tests := []struct {
		name     string
		break5   func(p *Provider)
		wantUUID bool
		reason   string
	}{
		{"event types not supported", func(p *Provider) {
			p.sim.Slot(5).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		}, true, "ERROR_NOT_SUPPORTED"},
		{"no Xid events among the supported ones", func(p *Provider) {
			p.sim.Slot(5).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return nvml.EventTypeDoubleBitEccError, nvml.SUCCESS }
		}, true, "no Xid events"},
		{"registration fails", func(p *Provider) {
			p.sim.Slot(5).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_UNKNOWN }
		}, true, "ERROR_UNKNOWN"},
		{"GPU lost", func(p *Provider) {
			if err := p.Simulation().LoseGPU("5"); err != nil {
				t.Fatal(err)
			}
		}, false, "ERROR_GPU_IS_LOST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newSimProvider(t, "pcie8")
			tt.break5(p)
			w, err := p.HealthWatcher(nil)
			if err != nil {
				t.Fatalf("one GPU failed the whole watcher: %v", err)
			}
			got := w.Unwatched()
			if len(got) != 1 || got[0].Index != 5 || !strings.Contains(got[0].Reason, tt.reason) {
				t.Fatalf("Unwatched = %+v, want GPU 5 only, for %q", got, tt.reason)
			}
			if want := p.sim.Slot(5).UUID; tt.wantUUID && got[0].UUID != want {
				t.Errorf("UUID = %q, want %q", got[0].UUID, want)
			}
			if len(w.handles) != 7 {
				t.Errorf("%d GPUs registered, want the 7 others", len(w.handles))
			}
		})
	}
}

// TestHealthWatcherBlamesTheLostGPU: when Wait fails because a GPU fell off
// the bus, only that GPU is reported, by its UUID.
func TestHealthWatcherBlamesTheLostGPU(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	scriptEvents(p, []waitResult{{ret: nvml.ERROR_GPU_IS_LOST}}, cancel)
	w, err := p.HealthWatcher(DefaultIgnoredXids)
	if err != nil {
		t.Fatal(err)
	}
	w.backoff = time.Millisecond
	if err := p.Simulation().LoseGPU("6"); err != nil {
		t.Fatal(err)
	}
	var got []Event
	w.Run(ctx, func(e Event) { got = append(got, e) })
	if want := []Event{{UUID: p.sim.Slot(6).UUID, Kind: GPULost}}; !slices.Equal(got, want) {
		t.Fatalf("events = %+v, want %+v", got, want)
	}
}

func TestSimInjectedEventsReachTheWatcher(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	if err := p.Simulation().InjectXid("3", 79); !errors.Is(err, sim.ErrNoEvents) {
		t.Fatalf("inject without a watcher: err = %v, want ErrNoEvents", err)
	}
	w, err := p.HealthWatcher(DefaultIgnoredXids)
	if err != nil {
		t.Fatal(err)
	}
	w.wait = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan Event, 4)
	go w.Run(ctx, func(e Event) { events <- e })
	sim := p.Simulation()
	for _, inject := range []func() error{
		func() error { return sim.InjectXid("3", 13) }, // ignored
		func() error { return sim.InjectXid("3", 48) },
		func() error { return sim.InjectECC(p.sim.Slot(4).UUID) },
	} {
		if err := inject(); err != nil {
			t.Fatal(err)
		}
	}
	want := []Event{{UUID: p.sim.Slot(3).UUID, Kind: XidError, Xid: 48}, {UUID: p.sim.Slot(4).UUID, Kind: DoubleBitECC}}
	for _, w := range want {
		select {
		case got := <-events:
			if got != w {
				t.Fatalf("event = %+v, want %+v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %+v never arrived", w)
		}
	}
	if r := want[0].Reason(); r != "Xid 48" {
		t.Fatalf("Reason = %q", r)
	}
}
