package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeSource struct {
	states    map[string]int
	connected bool
	nri       bool
}

func (f *fakeSource) GPUStates() map[string]int          { return f.states }
func (f *fakeSource) NRIConnected() (connected, ok bool) { return f.connected, f.nri }

func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestScrape(t *testing.T) {
	src := &fakeSource{states: map[string]int{"free": 5, "kubelet": 2, "hook": 1}, connected: true, nri: true}
	m := New(src)
	m.Observe("attach", 300*time.Microsecond, nil)
	m.Observe("attach", 2*time.Millisecond, errors.New("held"))
	m.Observe("detach", time.Millisecond, nil)
	m.AllocationError("held")
	m.NRIConnected()
	m.NRIConnected()
	m.NRIConnected()
	m.Quarantine("quarantined", 2)
	m.Quarantine("lifted", 1)
	m.RegrantsRevoked(3)
	m.GrantsReapplied(2)

	code, body := scrape(t, m.Handler(nil, nil), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`hotgpu_gpus{state="free"} 5`,
		`hotgpu_gpus{state="kubelet"} 2`,
		`hotgpu_gpus{state="hook"} 1`,
		`hotgpu_gpus{state="unhealthy"} 0`,
		`hotgpu_operations_total{op="attach",result="ok"} 1`,
		`hotgpu_operations_total{op="attach",result="error"} 1`,
		`hotgpu_operations_total{op="detach",result="ok"} 1`,
		`hotgpu_operation_duration_seconds_bucket{op="attach",le="0.0005"} 1`,
		`hotgpu_operation_duration_seconds_count{op="attach"} 2`,
		`hotgpu_allocation_errors_total{reason="held"} 1`,
		`hotgpu_nri_connections_total 3`,
		`hotgpu_nri_reconnects_total 2`,
		`hotgpu_nri_connected 1`,
		`hotgpu_quarantine_events_total{event="quarantined"} 2`,
		`hotgpu_quarantine_events_total{event="lifted"} 1`,
		`hotgpu_regrants_revoked_total 3`,
		`hotgpu_grants_reapplied_total 2`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if problems, err := testutil.GatherAndLint(m.reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestNRIDisabledHasNoConnectedGauge(t *testing.T) {
	m := New(&fakeSource{states: map[string]int{"free": 8, "mig": 1}})
	_, body := scrape(t, m.Handler(nil, nil), "/metrics")
	if strings.Contains(body, "hotgpu_nri_connected") {
		t.Errorf("NRI disabled, yet hotgpu_nri_connected is exported:\n%s", body)
	}
	if !strings.Contains(body, `hotgpu_gpus{state="mig"} 1`) {
		t.Errorf("unknown states must still be exported")
	}
}

func TestProbes(t *testing.T) {
	m := New(&fakeSource{})
	var healthErr, readyErr error
	h := m.Handler(func() error { return healthErr }, func() error { return readyErr })
	tests := []struct {
		name       string
		path       string
		health     error
		ready      error
		wantCode   int
		wantInBody string
	}{
		{"healthy", "/healthz", nil, nil, 200, "ok"},
		{"unhealthy", "/healthz", errors.New("API not serving"), nil, 503, "API not serving"},
		{"ready", "/readyz", nil, nil, 200, "ok"},
		{"not ready", "/readyz", nil, errors.New("waiting for the first NRI synchronize"), 503, "first NRI"},
		{"healthy while not ready", "/healthz", nil, errors.New("x"), 200, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			healthErr, readyErr = tt.health, tt.ready
			code, body := scrape(t, h, tt.path)
			if code != tt.wantCode || !strings.Contains(body, tt.wantInBody) {
				t.Fatalf("%s = %d %q, want %d %q", tt.path, code, body, tt.wantCode, tt.wantInBody)
			}
		})
	}
	if code, _ := scrape(t, h, "/other"); code != http.StatusNotFound {
		t.Errorf("/other = %d, want 404", code)
	}
}

func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Observe("attach", time.Millisecond, nil)
	m.AllocationError("held")
	m.NRIConnected()
}

func TestServe(t *testing.T) {
	m := New(&fakeSource{})
	ctx, cancel := contextWithCancel(t)
	errc, err := Serve(ctx, "127.0.0.1:0", m.Handler(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := Serve(ctx, "not an address", m.Handler(nil, nil)); err == nil {
		t.Fatal("Serve on a bad address succeeded")
	}
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}
