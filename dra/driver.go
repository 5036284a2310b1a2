package dra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	resourceclient "k8s.io/client-go/kubernetes/typed/resource/v1"
	"k8s.io/client-go/rest"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Config says where the plugin lives.
type Config struct {
	Node string
	// KubeletRootDir is kubelet's --root-dir: the plugin registers in
	// ROOT/plugins_registry and serves from ROOT/plugins/gpu.hotgpu.dev.
	KubeletRootDir string
	// CDIDir is where the per-claim CDI specs are written.
	CDIDir string
	// REST reaches the API server (ResourceClaims, ResourceSlices).
	REST *rest.Config
	// Observe, if set, records each claim's Prepare ("dra-prepare") and
	// Unprepare ("dra-unprepare"): how long it took and whether it failed.
	Observe func(op string, took time.Duration, err error)
}

// Driver is the DRA kubelet plugin.
type Driver struct {
	cfg    Config
	ledger *ledger.Ledger
	// inventory returns the node's GPUs now.
	inventory func() *gpu.Inventory
	// spec returns the node's CDI spec for inv (every GPU, named by UUID
	// among others); a claim's spec is cut from it.
	spec func(inv *gpu.Inventory) (*specs.Spec, error)
	log  *logrus.Entry
	// refresh wakes Run to publish again (the inventory changed).
	refresh chan struct{}
	// claims writes a refused claim's device status; nil until Run.
	claims resourceclient.ResourceClaimsGetter
}

// New returns the plugin; Run starts it.
func New(cfg Config, l *ledger.Ledger, inventory func() *gpu.Inventory, spec func(*gpu.Inventory) (*specs.Spec, error), log *logrus.Entry) *Driver {
	return &Driver{cfg: cfg, ledger: l, inventory: inventory, spec: spec, log: log, refresh: make(chan struct{}, 1)}
}

// Refresh publishes the pool again: the inventory changed.
func (d *Driver) Refresh() {
	select {
	case d.refresh <- struct{}{}:
	default: // one is pending
	}
}

// Run registers the plugin with kubelet, publishes the node's pool, and
// republishes it whenever the ledger changes, until ctx ends.
func (d *Driver) Run(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(d.cfg.REST)
	if err != nil {
		return fmt.Errorf("failed to build the Kubernetes client of the DRA plugin: %w", err)
	}
	// The helper creates neither; kubelet makes plugins_registry only.
	dataDir := filepath.Join(d.cfg.KubeletRootDir, "plugins", DriverName)
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return fmt.Errorf("failed to create the DRA plugin's dir: %w", err)
	}
	d.claims = client.ResourceV1()
	helper, err := kubeletplugin.Start(ctx, d,
		kubeletplugin.DriverName(DriverName),
		kubeletplugin.KubeClient(client),
		kubeletplugin.NodeName(d.cfg.Node),
		kubeletplugin.RegistrarDirectoryPath(filepath.Join(d.cfg.KubeletRootDir, "plugins_registry")),
		kubeletplugin.PluginDataDirectoryPath(dataDir),
	)
	if err != nil {
		return fmt.Errorf("failed to start the DRA kubelet plugin: %w", err)
	}
	defer helper.Stop()
	changed, cancel := d.ledger.Subscribe()
	defer cancel()
	for {
		if err := helper.PublishResources(ctx, Resources(d.cfg.Node, d.inventory(), d.ledger)); err != nil {
			d.log.WithError(err).Error("failed to publish the DRA ResourceSlice")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-d.refresh:
		}
	}
}

// HandleError logs background errors of the helper (publishing slices).
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	d.log.WithError(err).Error(msg)
}

// WatchHealthStatus: device health goes through the slice (an unhealthy or
// lost GPU is left out), not the kubelet's health service.
func (d *Driver) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}

// PrepareResourceClaims holds each claim's GPUs in the ledger and writes
// its CDI spec. A claim whose GPU another allocator holds fails with an
// error naming the holder, also written into the claim's status; kubelet
// retries it.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := map[types.UID]kubeletplugin.PrepareResult{}
	for _, c := range claims {
		start := time.Now()
		devs, err := d.prepare(c)
		d.observe("dra-prepare", start, err)
		out[c.UID] = kubeletplugin.PrepareResult{Devices: devs, Err: err}
		d.reportPrepare(ctx, c, err)
	}
	return out, nil
}

func (d *Driver) prepare(c *resourceapi.ResourceClaim) ([]kubeletplugin.Device, error) {
	if c.Status.Allocation == nil {
		return nil, fmt.Errorf("ResourceClaim %s/%s is not allocated", c.Namespace, c.Name)
	}
	inv := d.inventory()
	byName := map[string]*gpu.GPU{}
	for i := range inv.GPUs {
		byName[DeviceName(&inv.GPUs[i])] = &inv.GPUs[i]
	}
	var uuids []string
	var results []resourceapi.DeviceRequestAllocationResult
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != DriverName || r.Pool != d.cfg.Node {
			continue
		}
		g, ok := byName[r.Device]
		if !ok {
			return nil, fmt.Errorf("ResourceClaim %s/%s: device %s is not a GPU of node %s", c.Namespace, c.Name, r.Device, d.cfg.Node)
		}
		uuids = append(uuids, g.UUID)
		results = append(results, r)
	}
	holder := ledger.Holder{ClaimUID: string(c.UID), Claim: c.Namespace + "/" + c.Name}
	if err := d.ledger.Acquire(holder, ledger.DRA, ledger.Active, uuids...); err != nil {
		return nil, fmt.Errorf("ResourceClaim %s/%s cannot have its GPU: %w", c.Namespace, c.Name, err)
	}
	spec, err := d.claimSpec(inv, c.UID, uuids)
	if err == nil {
		_, err = cdi.Write(spec, d.cfg.CDIDir, specFile(c.UID))
	}
	if err != nil {
		_, _ = d.ledger.ReleaseWhere(func(g ledger.Grant) bool { return g.Reason == ledger.DRA && g.Holder.ClaimUID == string(c.UID) })
		return nil, fmt.Errorf("ResourceClaim %s/%s: %w", c.Namespace, c.Name, err)
	}
	devs := make([]kubeletplugin.Device, len(results))
	for i, r := range results {
		devs[i] = kubeletplugin.Device{
			Requests:     []string{r.Request},
			PoolName:     r.Pool,
			DeviceName:   r.Device,
			CDIDeviceIDs: []string{spec.Kind + "=" + claimDevice(c.UID, i)},
		}
	}
	d.log.WithFields(logrus.Fields{"claim": holder.Claim, "gpus": uuids}).Info("DRA claim prepared")
	return devs, nil
}

// claimSpec cuts the claim's devices out of the node's spec, renamed
// "<claim UID>-<n>" so that no spec of another claim defines the same name.
func (d *Driver) claimSpec(inv *gpu.Inventory, uid types.UID, uuids []string) (*specs.Spec, error) {
	full, err := d.spec(inv)
	if err != nil {
		return nil, err
	}
	byName := map[string]specs.Device{}
	for _, dev := range full.Devices {
		byName[dev.Name] = dev
	}
	spec := *full
	spec.Devices = nil
	for i, u := range uuids {
		dev, ok := byName[u]
		if !ok {
			return nil, fmt.Errorf("the node's CDI spec has no device %s", u)
		}
		dev.Name = claimDevice(uid, i)
		spec.Devices = append(spec.Devices, dev)
	}
	return &spec, nil
}

func claimDevice(uid types.UID, i int) string { return string(uid) + "-" + strconv.Itoa(i) }

func specFile(uid types.UID) string { return "hotgpu-dra-" + string(uid) + ".yaml" }

// UnprepareResourceClaims removes each claim's CDI spec and releases its
// GPUs. A claim not prepared (or already unprepared) is no error.
func (d *Driver) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := map[types.UID]error{}
	for _, c := range claims {
		start := time.Now()
		var err error
		if rmErr := os.Remove(filepath.Join(d.cfg.CDIDir, specFile(c.UID))); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = fmt.Errorf("failed to remove the CDI spec of ResourceClaim %s: %w", c.String(), rmErr)
		} else if _, relErr := d.ledger.ReleaseWhere(func(g ledger.Grant) bool {
			return g.Reason == ledger.DRA && g.Holder.ClaimUID == string(c.UID)
		}); relErr != nil {
			err = relErr
		}
		out[c.UID] = err
		d.observe("dra-unprepare", start, err)
	}
	return out, nil
}

func (d *Driver) observe(op string, start time.Time, err error) {
	if d.cfg.Observe != nil {
		d.cfg.Observe(op, time.Since(start), err)
	}
}
