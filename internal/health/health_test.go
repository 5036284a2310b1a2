package health

import (
	"context"
	"slices"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRecovery(t *testing.T) {
	const window = time.Minute
	tests := []struct {
		name  string
		steps func(tr *Tracker, c *clock)
		want  bool // healthy at the end
	}{
		{"error then quiet window recovers", func(tr *Tracker, c *clock) {
			tr.Report("GPU-0", "Xid 62")
			c.advance(window)
		}, true},
		{"still inside the window", func(tr *Tracker, c *clock) {
			tr.Report("GPU-0", "Xid 62")
			c.advance(window - time.Second)
		}, false},
		{"a new error restarts the window", func(tr *Tracker, c *clock) {
			tr.Report("GPU-0", "Xid 62")
			c.advance(window - time.Second)
			tr.Report("GPU-0", "Xid 63")
			c.advance(2 * time.Second)
		}, false},
		{"manual mark never recovers by itself", func(tr *Tracker, c *clock) {
			tr.Set("GPU-0", false, "drain")
			c.advance(10 * window)
		}, false},
		{"an error does not lift a manual mark's stickiness", func(tr *Tracker, c *clock) {
			tr.Set("GPU-0", false, "drain")
			tr.Report("GPU-0", "Xid 62")
			c.advance(10 * window)
		}, false},
		{"manual healthy clears an error (GPU reset)", func(tr *Tracker, c *clock) {
			tr.Report("GPU-0", "Xid 62")
			tr.Set("GPU-0", true, "")
		}, true},
		{"a fatal error stays past the quiet window", func(tr *Tracker, c *clock) {
			tr.ReportFatal("GPU-0", "Xid 79")
			c.advance(10 * window)
		}, false},
		{"a transient error does not make a fatal one heal", func(tr *Tracker, c *clock) {
			tr.ReportFatal("GPU-0", "Xid 48")
			tr.Report("GPU-0", "Xid 62")
			c.advance(10 * window)
		}, false},
		{"a fatal error after a transient one stays", func(tr *Tracker, c *clock) {
			tr.Report("GPU-0", "Xid 62")
			tr.ReportFatal("GPU-0", "Xid 48")
			c.advance(10 * window)
		}, false},
		{"operator set healthy clears a fatal error", func(tr *Tracker, c *clock) {
			tr.ReportFatal("GPU-0", "Xid 79")
			c.advance(10 * window)
			tr.Set("GPU-0", true, "")
		}, true},
		{"NVML reading the GPU again clears a fatal error", func(tr *Tracker, c *clock) {
			tr.ReportFatal("GPU-0", "GPU lost")
			tr.Clear("GPU-0")
		}, true},
		{"Clear leaves a manual mark", func(tr *Tracker, c *clock) {
			tr.Set("GPU-0", false, "drain")
			tr.ReportFatal("GPU-0", "GPU lost")
			tr.Clear("GPU-0")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			tr := New(WithRecoveryWindow(window), WithClock(c.now))
			tt.steps(tr, c)
			tr.Recover()
			if got := tr.Healthy("GPU-0"); got != tt.want {
				t.Fatalf("Healthy = %v, want %v (state %+v)", got, tt.want, tr.Unhealthy())
			}
			if !tr.Healthy("GPU-1") {
				t.Fatal("an untouched GPU is unhealthy")
			}
		})
	}
}

func TestNoAutomaticRecoveryWhenWindowIsZero(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	tr := New(WithRecoveryWindow(0), WithClock(c.now))
	tr.Report("GPU-0", "Xid 79")
	c.advance(24 * time.Hour)
	if r := tr.Recover(); len(r) != 0 || tr.Healthy("GPU-0") {
		t.Fatalf("recovered %v with automatic recovery off", r)
	}
}

func TestSubscribeAndRun(t *testing.T) {
	tr := New(WithRecoveryWindow(200 * time.Millisecond))
	ch, cancel := tr.Subscribe()
	defer cancel()
	tr.Report("GPU-3", "double-bit ECC error")
	select {
	case <-ch:
	default:
		t.Fatal("no wake-up after a GPU turned unhealthy")
	}
	if got := tr.Unhealthy(); len(got) != 1 || got[0].Reason != "double-bit ECC error" || got[0].RecoversAt.IsZero() {
		t.Fatalf("Unhealthy = %+v", got)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	recovered := make(chan []string, 1)
	go tr.Run(ctx, func(u []string) { recovered <- u })
	select {
	case u := <-recovered:
		if !slices.Equal(u, []string{"GPU-3"}) {
			t.Fatalf("recovered %v", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GPU did not recover after its window")
	}
	<-ch
	if !tr.Healthy("GPU-3") || tr.Count() != 0 {
		t.Fatal("GPU still unhealthy after recovery")
	}
}

func TestReportFatalIsIdempotent(t *testing.T) {
	tr := New()
	ch, stop := tr.Subscribe()
	defer stop()
	if !tr.ReportFatal("GPU-0", "GPU lost") {
		t.Fatal("first report changed nothing")
	}
	<-ch
	if tr.ReportFatal("GPU-0", "GPU lost") {
		t.Fatal("a repeated report changed the state")
	}
	select {
	case <-ch:
		t.Fatal("a repeated report woke subscribers")
	default:
	}
	if s := tr.Unhealthy(); len(s) != 1 || !s[0].Fatal || !s[0].RecoversAt.IsZero() {
		t.Fatalf("status = %+v, want fatal with no recovery time", s)
	}
}
