// Package health tracks whether each GPU may be handed out. GPUs start
// healthy. A transient error (an Xid that is not fatal) makes a GPU
// unhealthy, and it recovers by itself once a configured window passes with
// no new error — the NVIDIA device plugin never recovers a GPU, which is why
// a transient Xid there costs a node a GPU until the plugin restarts. A
// fatal error (ReportFatal: an Xid that needs a GPU reset or a reboot, see
// FatalXids, a lost GPU, a GPU whose errors cannot be watched) never heals by
// itself: it sticks until an operator marks the GPU healthy (`hotgpu health
// set`, after the reset) or the daemon clears it because NVML reads the GPU
// again (Clear). An operator can also mark a GPU unhealthy by hand; that
// sticks until it is marked healthy again.
//
// It knows GPUs only by UUID and does not read NVML: internal/nvml produces
// the events, the daemon feeds them in, the device plugin, the NRI plugin and
// live attach read Healthy.
package health

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultRecoveryWindow is how long a GPU must go without a new error before
// it is healthy again.
const DefaultRecoveryWindow = 5 * time.Minute

// Status is one unhealthy GPU.
type Status struct {
	UUID   string    `json:"uuid"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// Last is the time of the latest error; the GPU recovers at Last+window.
	Last time.Time `json:"last"`
	// Manual is set when an operator marked the GPU; it then never recovers
	// by itself.
	Manual bool `json:"manual,omitempty"`
	// Fatal is set for an error that needs a GPU reset or a reboot; the GPU
	// then never recovers by itself.
	Fatal bool `json:"fatal,omitempty"`
	// RecoversAt is when the GPU becomes healthy unless another error comes
	// (zero for manual marks and when automatic recovery is off).
	RecoversAt time.Time `json:"recoversAt,omitzero"`
}

// Tracker is safe for concurrent use.
type Tracker struct {
	mu        sync.Mutex
	window    time.Duration // 0: never recover by itself
	now       func() time.Time
	unhealthy map[string]Status
	subs      map[chan struct{}]struct{}
}

// Option configures a Tracker.
type Option func(*Tracker)

// WithRecoveryWindow sets how long a GPU must go without errors to recover
// (default DefaultRecoveryWindow); 0 turns automatic recovery off.
func WithRecoveryWindow(d time.Duration) Option { return func(t *Tracker) { t.window = d } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(t *Tracker) { t.now = now } }

// New returns a tracker in which every GPU is healthy.
func New(opts ...Option) *Tracker {
	t := &Tracker{window: DefaultRecoveryWindow, now: time.Now, unhealthy: map[string]Status{}, subs: map[chan struct{}]struct{}{}}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Healthy reports whether the GPU may be handed out.
func (t *Tracker) Healthy(uuid string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, bad := t.unhealthy[uuid]
	return !bad
}

// FatalXids are the Xids after which a GPU needs a reset (or the node a
// reboot) before it can be trusted again, per NVIDIA's Xid catalogue: 48
// (double-bit ECC error), 64 (ECC page retirement or row remapping failure),
// 79 (fallen off the bus), 92 (high single-bit ECC rate), 94 and 95
// (contained and uncontained ECC errors), 119 and 120 (GSP RPC timeout, GSP
// error).
var FatalXids = []uint64{48, 64, 79, 92, 94, 95, 119, 120}

// Report records a transient error event: the GPU is unhealthy until the
// recovery window passes without another Report. A manual or fatal mark is
// kept as it is.
func (t *Tracker) Report(uuid, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	s, bad := t.unhealthy[uuid]
	switch {
	case bad && (s.Manual || s.Fatal):
		return
	case !bad:
		s = Status{UUID: uuid, Since: now}
	}
	s.Reason, s.Last = reason, now
	if t.window > 0 {
		s.RecoversAt = now.Add(t.window)
	}
	t.unhealthy[uuid] = s
	t.notify()
}

// ReportFatal records an error that needs a GPU reset or a reboot: the GPU
// stays unhealthy until Set(uuid, true, ...) or Clear. A manual mark is kept
// as it is. It reports whether anything changed (repeated reports of the
// same error change nothing and wake no subscriber).
func (t *Tracker) ReportFatal(uuid, reason string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, bad := t.unhealthy[uuid]
	switch {
	case bad && s.Manual:
		return false
	case bad && s.Fatal && s.Reason == reason:
		return false
	case !bad:
		s = Status{UUID: uuid, Since: t.now()}
	}
	s.Reason, s.Last, s.Fatal, s.RecoversAt = reason, t.now(), true, time.Time{}
	t.unhealthy[uuid] = s
	t.notify()
	return true
}

// Clear removes an error-driven mark, fatal or not, when a check of the GPU
// itself says it works again (NVML reads a GPU that was lost: it was reset).
// A manual mark stays. It reports whether the GPU became healthy.
func (t *Tracker) Clear(uuid string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, bad := t.unhealthy[uuid]
	if !bad || s.Manual {
		return false
	}
	delete(t.unhealthy, uuid)
	t.notify()
	return true
}

// Set marks a GPU by hand: unhealthy with reason until Set again with
// healthy=true, which also clears an error-driven mark (use it after a GPU
// reset). It reports whether the GPU's health changed.
func (t *Tracker) Set(uuid string, healthy bool, reason string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, bad := t.unhealthy[uuid]
	if healthy {
		if bad {
			delete(t.unhealthy, uuid)
			t.notify()
		}
		return bad
	}
	now := t.now()
	t.unhealthy[uuid] = Status{UUID: uuid, Reason: reason, Since: now, Last: now, Manual: true}
	t.notify()
	return !bad
}

// Unhealthy lists the unhealthy GPUs, ordered by UUID.
func (t *Tracker) Unhealthy() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Collect(maps.Values(t.unhealthy))
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.UUID, b.UUID) })
	return out
}

// Count returns how many GPUs are unhealthy.
func (t *Tracker) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.unhealthy)
}

// Recover makes healthy every GPU whose window passed without an error and
// returns their UUIDs. Run calls it; tests call it with their own clock.
func (t *Tracker) Recover() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []string
	for u, s := range t.unhealthy {
		if !s.Manual && !s.Fatal && !s.RecoversAt.IsZero() && !now.Before(s.RecoversAt) {
			delete(t.unhealthy, u)
			out = append(out, u)
		}
	}
	if len(out) > 0 {
		slices.Sort(out)
		t.notify()
	}
	return out
}

// Run recovers GPUs as their windows pass until ctx ends, calling
// recovered (if not nil) with each batch.
func (t *Tracker) Run(ctx context.Context, recovered func([]string)) {
	if t.window <= 0 {
		return
	}
	tick := time.NewTicker(min(max(t.window/10, 100*time.Millisecond), 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if r := t.Recover(); len(r) > 0 && recovered != nil {
				recovered(r)
			}
		}
	}
}

// Subscribe returns a channel that receives a value after any GPU's health
// changes, and a function that ends the subscription. Wake-ups are
// coalesced and never block the tracker; re-read Healthy when woken.
func (t *Tracker) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs[ch] = struct{}{}
	return ch, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.subs, ch)
	}
}

func (t *Tracker) notify() {
	for ch := range t.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
