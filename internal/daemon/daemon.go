// Package daemon wires hotgpud together: the GPU inventory, the CDI spec,
// the ledger, the NRI plugin, live attach and the control API, all in one
// process sharing one ledger so no GPU is handed out twice. cmd/hotgpud is
// its thin main; tests start it in-process.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/deviceplugin"
	"github.com/hotgpu/hotgpu/dra"
	"github.com/hotgpu/hotgpu/internal/apiserver"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/metrics"
	"github.com/hotgpu/hotgpu/internal/nvml"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
	"github.com/hotgpu/hotgpu/internal/systemd"
	"github.com/hotgpu/hotgpu/k8s"
	"github.com/hotgpu/hotgpu/plugin"
)

// failpoint is nil in every normal build. Test builds with the
// hotgpu_failpoints tag set it (failpoints.go) so the integration
// suite can kill hotgpud between the steps of an attach or detach.
var failpoint func(step string) error

// newProvider opens NVML; tests replace it to change the simulated node
// before the daemon first reads it.
var newProvider = nvml.New

// Daemon is hotgpud.
type Daemon struct {
	cfg      *configv1.Config
	log      *logrus.Entry
	provider *nvml.Provider
	inv      atomic.Pointer[gpu.Inventory]
	health   *health
	ledger   *ledger.Ledger
	registry *registry.Registry
	attach   *attach.Manager
	plugin   *plugin.Plugin
	metrics  *metrics.Metrics
	started  time.Time
	cdiPath  atomic.Value // string
	// lastReconcile is when the last full reconcile ended (unix nanoseconds).
	lastReconcile atomic.Int64
	// driver is the driver's user-space found with the inventory; nil
	// when the node has none to give (simulated, no driver root).
	driver atomic.Pointer[driver.Driver]
	// driverMu serialises giving the driver to running containers.
	driverMu sync.Mutex

	// agent carries out GPUAttachments; nil without a Kubernetes API.
	agent *k8s.Agent
	// dra is the DRA kubelet plugin; nil unless dra.enabled.
	dra *dra.Driver

	// devicePlugin is the kubelet device plugin; nil when disabled.
	devicePlugin *deviceplugin.Plugin
	// mig holds the plugins of the MIG profiles under the mixed strategy.
	mig migPlugins

	// Ready is closed once the API serves and, unless NRI is disabled, the
	// first NRI Synchronize has been handled.
	Ready     chan struct{}
	readyOnce sync.Once
	// synced and updated carry NRI's Synchronize and container updates to
	// loop: NRI callbacks only queue work, so a slow cgroup scan never
	// holds up the runtime's request (and its timeout).
	synced  chan struct{}
	updated chan string
	// refresh asks loop to read the inventory again now (a MIG layout
	// change), not at the next tick.
	refresh chan struct{}
	// rebuilding is set when the ledger was rebuilt from a corrupt file.
	rebuilding bool
}

// New builds the daemon from cfg. Nothing runs until Run.
func New(cfg *configv1.Config, log *logrus.Entry) (d *Daemon, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d = &Daemon{cfg: cfg, log: log, health: newHealth(healthOptions(cfg)...), registry: registry.New(), started: time.Now(), Ready: make(chan struct{}),
		synced: make(chan struct{}, 1), updated: make(chan string, 64), refresh: make(chan struct{}, 1)}
	opts := []nvml.Option{nvml.WithDriverRoot(cfg.DriverRoot)}
	if cfg.Simulate != "" {
		opts = append(opts, nvml.WithSimulate(cfg.Simulate))
	}
	if cfg.DevRoot != "" {
		opts = append(opts, nvml.WithDevRoot(cfg.DevRoot))
	}
	if d.provider, err = newProvider(opts...); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.provider.Close()
		}
	}()
	if err = simulateMIG(d.provider, cfg.SimulateMIG); err != nil {
		return nil, err
	}
	inv, err := d.provider.Inventory()
	if err != nil {
		return nil, fmt.Errorf("failed to read GPU inventory: %w", err)
	}
	d.trackLost(nil, inv)
	d.warnProblems(nil, inv)
	d.inv.Store(inv)
	var rebuilt bool
	if d.ledger, rebuilt, err = openLedger(cfg.StateDir, log); err != nil {
		return nil, err
	}
	// a MIG instance and its parent exclude each other, whoever asks
	d.ledger.SetOverlaps(func(uuid string) []string { return d.Inventory().Overlapping(uuid) })
	d.health.inv = d.Inventory
	// A ledger rebuilt from a corrupt file is empty until the first NRI
	// Synchronize re-records the running containers' GPUs: nothing may be
	// handed out before that (see waitRebuilt).
	d.rebuilding = rebuilt && !cfg.NRI.Disabled
	if err = d.newDevicePlugin(); err != nil {
		return nil, err
	}
	d.metrics = metrics.New(d)
	d.attach = attach.New(d, d.health, d.ledger, d.registry, log)
	if failpoint != nil {
		d.attach.SetFailpoint(failpoint)
	}
	if systemd.Running() {
		// Under the systemd cgroup driver a live grant must be in the
		// container's scope too, or daemon-reload drops it.
		d.attach.SetUnits(systemd.New(), systemd.UnitOf)
	}
	if d.agent, err = newAgent(cfg, d.attach, d.ledger, d, log); err != nil {
		return nil, err
	}
	if d.dra, err = d.newDRA(); err != nil {
		return nil, err
	}
	if !cfg.NRI.Disabled {
		d.plugin, err = plugin.New(d, d.ledger, d.registry,
			plugin.WithSocket(cfg.NRI.Socket),
			plugin.WithIndex(cfg.NRI.PluginIndex),
			plugin.WithCDIKind(cfg.CDI.Vendor+"/"+cfg.CDI.Class),
			plugin.WithPolicy(policy.Policy{Namespaces: cfg.Annotations.Namespaces, MaxPerContainer: cfg.Annotations.MaxPerContainer}),
			plugin.WithHealth(d.health),
			plugin.WithLogger(log),
			plugin.WithAfterUpdate(d.onUpdate),
			plugin.WithOnSync(d.onSync),
			plugin.WithFailpoint(failpoint),
			plugin.WithDriver(d, cfg.HookPath),
		)
		if err != nil {
			return nil, err
		}
		if d.agent != nil {
			d.plugin.SetHolders(d.agent)
			d.plugin.SetCharger(d.agent)
		}
	}
	return d, nil
}

// openLedger loads the ledger. A corrupt state file is moved aside and the
// ledger rebuilt from the live containers at the first NRI Synchronize; it
// is logged loudly, never silently replaced.
func openLedger(dir string, log *logrus.Entry) (l *ledger.Ledger, rebuilt bool, err error) {
	store, err := ledger.NewFileStore(dir)
	if err != nil {
		return nil, false, err
	}
	l, err = ledger.New(store)
	if errors.Is(err, ledger.ErrCorrupt) {
		moved, merr := store.MoveAside(time.Now().UTC().Format("20060102T150405.000000000Z"))
		if merr != nil {
			return nil, false, errors.Join(err, merr)
		}
		log.WithError(err).WithField("moved_to", moved).Error("ledger state was corrupt; rebuilding it from the running containers")
		l, err = ledger.New(store)
		return l, err == nil, err
	}
	return l, false, err
}

// Inventory returns the current GPU inventory.
func (d *Daemon) Inventory() *gpu.Inventory { return d.inv.Load() }

// Processes implements attach.Processes: NVML's view of who runs on a GPU.
func (d *Daemon) Processes(uuid string) ([]int, error) { return d.provider.Processes(uuid) }

// Run serves until ctx ends, then shuts down cleanly.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.provider.Close()
	if err := d.writeCDI(d.Inventory()); err != nil {
		return err
	}
	if undone, err := d.attach.Recover(); err != nil {
		d.log.WithError(err).Error("failed to roll back interrupted operations")
	} else if len(undone) > 0 {
		d.log.WithField("gpus", len(undone)).Info("interrupted operations rolled back")
	}
	stopMetrics, err := d.startMetrics(ctx)
	if err != nil {
		return err
	}
	defer stopMetrics()
	srv, err := apiserver.NewServer(d.cfg.API.Socket, d.cfg.API.Group, instrumented{d}, d.log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); errc <- srv.Serve() }()
	d.log.WithField("socket", d.cfg.API.Socket).Info("API serving")

	if d.plugin != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = d.plugin.Run(ctx, nil) }()
	} else {
		d.readyOnce.Do(func() { close(d.Ready) })
	}
	d.runHealthAndDevicePlugin(ctx, &wg)
	d.runAgent(ctx, &wg)
	d.runDRA(ctx, &wg)
	wg.Add(1)
	go func() { defer wg.Done(); d.loop(ctx) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	return runErr
}

// onSync runs after every NRI Synchronize: live grants are re-checked and
// the daemon is ready once the first one is done.
func (d *Daemon) onSync() {
	d.metrics.NRIConnected()
	select {
	case d.synced <- struct{}{}:
	default: // one queued pass covers both
	}
}

// onUpdate queues a re-check of a container the runtime updated.
func (d *Daemon) onUpdate(id string) {
	select {
	case d.updated <- id:
	default:
		d.log.WithField("container", id).Debug("update queue full; the periodic reconcile re-checks it")
	}
}

// afterSync completes a Synchronize: the first one (after a rebuild, with
// the live grants adopted from the cgroups) makes the daemon Ready; each
// re-checks the live grants.
func (d *Daemon) afterSync() {
	d.readyOnce.Do(func() {
		if d.rebuilding {
			d.adoptLiveGrants()
		}
		close(d.Ready)
	})
	d.reconcile("")
}

// adoptLiveGrants completes a rebuild from a corrupt ledger: NRI Synchronize
// has re-recorded the GPUs in the containers' specs; live-attached GPUs are
// only in their cgroups. Runs once, before the daemon is Ready.
func (d *Daemon) adoptLiveGrants() {
	adopted, conflicts, unreadable := d.attach.Adopt(d.registry.List())
	d.log.WithFields(map[string]any{"adopted": len(adopted), "conflicts": conflicts, "cgroup_v2_unreadable": unreadable}).
		Warn("ledger rebuild: live-attached GPUs recovered from the containers' device cgroups")
}

// loop runs the periodic reconcile and inventory refresh. It sleeps between
// passes: no busy polling.
func (d *Daemon) loop(ctx context.Context) {
	tick := time.NewTicker(d.cfg.ReconcileInterval.Duration)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.synced:
			d.afterSync()
		case id := <-d.updated:
			d.reconcile(id)
		case <-d.refresh:
			d.refreshInventory()
		case <-tick.C:
			d.refreshInventory()
			d.reconcile("")
			d.sweepHookGrants()
		}
	}
}

func (d *Daemon) reconcile(id string) {
	reapplied, err := d.attach.Reconcile(id)
	d.metrics.GrantsReapplied(reapplied)
	if err != nil {
		d.log.WithError(err).Warn("reconcile of live grants failed")
	}
	n, err := d.attach.RevokeStrays(id)
	d.metrics.RegrantsRevoked(n)
	if err != nil {
		d.log.WithError(err).Warn("failed to revoke GPUs re-granted after detach")
	}
	if id != "" {
		return
	}
	lifted, err := d.attach.LiftQuarantines()
	d.metrics.Quarantine("lifted", len(lifted))
	if err != nil {
		d.log.WithError(err).Warn("failed to check quarantined GPUs")
	}
	d.lastReconcile.Store(time.Now().UnixNano())
}

// refreshInventory re-reads NVML and rewrites the CDI spec when the GPUs
// changed (a GPU fell off the bus, MIG was reconfigured). A lost GPU is
// marked unhealthy before the new inventory is published.
func (d *Daemon) refreshInventory() {
	inv, err := d.provider.Inventory()
	if err != nil {
		d.log.WithError(err).Warn("failed to refresh GPU inventory")
		return
	}
	old := d.Inventory()
	if reflect.DeepEqual(inv, old) {
		return
	}
	d.trackLost(old, inv)
	d.warnProblems(old, inv)
	d.inv.Store(inv)
	d.log.WithField("gpus", len(inv.GPUs)).Info("GPU inventory changed")
	if err := d.writeCDI(inv); err != nil {
		d.log.WithError(err).Error("failed to rewrite CDI spec")
	}
	d.reportDestroyedMIG(old, inv)
	d.syncMIGPlugins(inv)
	if d.dra != nil {
		d.dra.Refresh()
	}
	if d.devicePlugin != nil {
		d.devicePlugin.Refresh()
		for _, p := range d.mig.plugins() {
			p.Refresh()
		}
	}
}
