// Package metrics is hotgpud's Prometheus instrumentation and its small HTTP
// endpoint: /metrics, /healthz (the process works: probes for liveness and
// readiness) and /readyz (also synchronised with the runtime at least once).
//
// It owns the metric names and labels and reads the GPU picture at scrape
// time through a Source, so nothing has to keep gauges in step with the
// ledger. It knows nothing about how hotgpud is wired; internal/daemon feeds
// it. It is not a general HTTP server: it serves nothing else.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "hotgpu"

// Source reports the node's GPUs at scrape time.
type Source interface {
	// GPUStates counts GPUs by state: "free", "unhealthy", "mig" (in MIG
	// mode: handed out by MIG device, never whole), or the reason they are
	// held ("kubelet", "annotation", "attach", "hook", "quarantine").
	GPUStates() map[string]int
	// NRIConnected reports whether the NRI connection is up; ok is false
	// when NRI is disabled.
	NRIConnected() (connected, ok bool)
}

// Metrics holds hotgpud's metrics. The zero value is not usable; a nil
// *Metrics is, and records nothing.
type Metrics struct {
	reg           *prometheus.Registry
	ops           *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	allocErrors   *prometheus.CounterVec
	nriConnects   prometheus.Counter
	nriReconnects prometheus.Counter
	quarantines   *prometheus.CounterVec
	regrants      prometheus.Counter
	reapplied     prometheus.Counter
	migDestroyed  prometheus.Counter
}

// New registers hotgpud's metrics, Go runtime and process metrics in a
// private registry.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "operations_total",
			Help: "Attach, detach, hook and DRA prepare/unprepare operations, by result (ok or error).",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "operation_duration_seconds",
			Help: "Time from request to a running container having (or no longer having) its GPUs.",
			// Measured: ~0.03 ms for cgroup rule + node; the ledger's fsync dominates.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		allocErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "allocation_errors_total",
			Help: "Requests for GPUs that were refused or failed, by reason (held, busy, not_found, unhealthy, invalid, other).",
		}, []string{"reason"}),
		nriConnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "nri_connections_total",
			Help: "NRI connections to the runtime (each one starts with a Synchronize).",
		}),
		nriReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "nri_reconnects_total",
			Help: "NRI connections made after the first, i.e. after the runtime restarted or closed the connection.",
		}),
		quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "quarantine_events_total",
			Help: "GPUs quarantined because a process still held them after detach, and quarantines lifted once no process did.",
		}, []string{"event"}),
		reapplied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "grants_reapplied_total",
			Help: "Live grants that a runtime or systemd (daemon-reload) had reset, which reconcile re-applied.",
		}),
		regrants: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "regrants_revoked_total",
			Help: "GPUs re-granted to a container after hotgpu detached them (not by hotgpu), which reconcile revoked again.",
		}),
		migDestroyed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "mig_held_destroyed_total",
			Help: "Held MIG devices that a MIG layout change destroyed under their holder.",
		}),
	}
	m.reg.MustRegister(m.ops, m.latency, m.allocErrors, m.nriConnects, m.nriReconnects, m.quarantines, m.regrants, m.reapplied, m.migDestroyed,
		&sourceCollector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one operation ("attach", "detach", "hook",
// "dra-prepare", "dra-unprepare") that took d and ended with err.
func (m *Metrics) Observe(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.ops.WithLabelValues(op, result).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}

// AllocationError counts a refused or failed GPU request.
func (m *Metrics) AllocationError(reason string) {
	if m == nil {
		return
	}
	m.allocErrors.WithLabelValues(reason).Inc()
}

// Quarantine counts GPUs quarantined (event "quarantined") or freed from
// quarantine ("lifted").
func (m *Metrics) Quarantine(event string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.quarantines.WithLabelValues(event).Add(float64(n))
}

// GrantsReapplied counts grants that reconcile re-applied.
func (m *Metrics) GrantsReapplied(n int) {
	if m == nil {
		return
	}
	m.reapplied.Add(float64(n))
}

// MIGHeldDestroyed counts held MIG devices a MIG layout change destroyed.
func (m *Metrics) MIGHeldDestroyed(n int) {
	if m == nil {
		return
	}
	m.migDestroyed.Add(float64(n))
}

// RegrantsRevoked counts GPUs that reconcile revoked again.
func (m *Metrics) RegrantsRevoked(n int) {
	if m == nil {
		return
	}
	m.regrants.Add(float64(n))
}

// NRIConnected counts an NRI connection; every one after the first is a
// reconnect.
func (m *Metrics) NRIConnected() {
	if m == nil {
		return
	}
	m.nriConnects.Inc()
	if m.connects() > 1 {
		m.nriReconnects.Inc()
	}
}

func (m *Metrics) connects() float64 {
	ch := make(chan prometheus.Metric, 1)
	m.nriConnects.Collect(ch)
	return readValue(<-ch)
}

// Handler serves /metrics, /healthz and /readyz. healthy and ready return
// nil when all is well, else the reason, which the probe shows.
func (m *Metrics) Handler(healthy, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", probe(healthy))
	mux.HandleFunc("GET /readyz", probe(ready))
	return mux
}

func probe(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if check != nil {
			if err := check(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(err.Error() + "\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}

// Serve listens on addr and serves h until ctx ends. The listener is opened
// before Serve returns its first error, so a bad address fails the start.
// Clients are bounded by defaultLimits.
func Serve(ctx context.Context, addr string, h http.Handler) (<-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return serve(ctx, ln, defaultLimits.server(h), defaultLimits.maxConns), nil
}

func serve(ctx context.Context, ln net.Listener, srv *http.Server, maxConns int) <-chan error {
	ln = newLimitListener(ln, maxConns)
	errc := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return errc
}
