package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/metrics"
)

var _ metrics.Source = (*Daemon)(nil)

// GPUStates implements metrics.Source: unhealthy GPUs, held GPUs by the
// reason they are held, and the free rest.
func (d *Daemon) GPUStates() map[string]int {
	out := map[string]int{}
	for _, g := range d.Inventory().GPUs {
		switch grant, held := d.ledger.Lookup(g.UUID); {
		case !d.health.Healthy(g.UUID):
			out["unhealthy"]++
		case held:
			out[string(grant.Reason)]++
		case g.MIGEnabled:
			out["mig"]++ // never handed out whole: its MIG devices are
		default:
			out["free"]++
		}
	}
	return out
}

// NRIConnected implements metrics.Source.
func (d *Daemon) NRIConnected() (connected, ok bool) {
	if d.plugin == nil {
		return false, false
	}
	return d.plugin.Connected(), true
}

// instrumented is the daemon as the API sees it: every attach, detach and
// hook request is counted and timed, and refusals are counted by reason.
type instrumented struct{ *Daemon }

func (i instrumented) Attach(t attach.Target, ids []string, count int) (*attach.Result, error) {
	start := time.Now()
	res, err := i.Daemon.Attach(t, ids, count)
	i.observe("attach", start, err)
	return res, err
}

func (i instrumented) AttachMIG(t attach.Target, profile string, count int) (*attach.Result, error) {
	start := time.Now()
	res, err := i.Daemon.AttachMIG(t, profile, count)
	i.observe("attach", start, err)
	return res, err
}

func (i instrumented) Detach(t attach.Target, ids []string, force bool) (*attach.Result, error) {
	start := time.Now()
	res, err := i.Daemon.Detach(t, ids, force)
	i.observe("detach", start, err)
	if err == nil {
		i.metrics.Quarantine("quarantined", len(res.Quarantined))
	}
	return res, err
}

func (i instrumented) HookReserve(req api.HookReserveRequest) (*api.HookReservation, error) {
	start := time.Now()
	res, err := i.Daemon.HookReserve(req)
	i.observe("hook", start, err)
	return res, err
}

func (i instrumented) observe(op string, start time.Time, err error) {
	i.metrics.Observe(op, time.Since(start), err)
	if err != nil && op != "detach" {
		i.metrics.AllocationError(errorReason(err))
	}
}

// errorReason sorts a failed request into a few stable label values.
func errorReason(err error) string {
	switch {
	case errors.Is(err, ledger.ErrHeld), errors.Is(err, alloc.ErrHeld):
		return "held"
	case errors.Is(err, attach.ErrBusy):
		return "busy"
	case errors.Is(err, attach.ErrNotFound), errors.Is(err, gpu.ErrNoSuchGPU):
		return "not_found"
	case errors.Is(err, alloc.ErrUnhealthy):
		return "unhealthy"
	case errors.Is(err, alloc.ErrNotEnough):
		return "no_free_gpu"
	}
	return "other"
}

// startMetrics serves /metrics, /healthz and /readyz when an address is
// configured. The returned stop shuts the endpoint down.
func (d *Daemon) startMetrics(ctx context.Context) (stop func(), err error) {
	if d.cfg.Metrics.Address == "" {
		return func() {}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	errc, err := metrics.Serve(ctx, d.cfg.Metrics.Address, d.metrics.Handler(d.healthy, d.ready))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("failed to serve metrics on %s (set metrics.address or --metrics-address to a free port): %w", d.cfg.Metrics.Address, err)
	}
	d.log.WithField("address", d.cfg.Metrics.Address).Info("metrics serving")
	go func() {
		if err := <-errc; err != nil {
			d.log.WithError(err).Error("metrics endpoint stopped")
		}
	}()
	return cancel, nil
}

// healthy is the liveness check: the API accepts connections. It does not
// depend on containerd: hotgpud reconnects to NRI by itself, and a restart
// would not bring containerd back sooner.
func (d *Daemon) healthy() error {
	c, err := net.DialTimeout("unix", d.cfg.API.Socket, time.Second)
	if err != nil {
		return fmt.Errorf("API socket %s does not accept connections: %w", d.cfg.API.Socket, err)
	}
	return c.Close()
}

// ready also needs the first NRI Synchronize (when NRI is enabled), after
// which the ledger matches the runtime's containers.
func (d *Daemon) ready() error {
	if err := d.healthy(); err != nil {
		return err
	}
	select {
	case <-d.Ready:
		return nil
	default:
		return errors.New("waiting for the first NRI synchronize with the runtime")
	}
}
