// Package plugin is hotgpud's containerd NRI plugin: it injects GPU device
// nodes, per-GPU cgroup rules, NVIDIA_VISIBLE_DEVICES and the driver's
// user-space (mounts and createContainer hooks) into pod containers at
// creation (from the kubelet allocation or a policy-checked annotation;
// the hotplug annotation gives the driver alone, for a later attach),
// releases GPUs when containers go away, and reconciles the ledger with the
// containers that really exist whenever the runtime (re)connects.
//
// It is the only package that imports github.com/containerd/nri. It does not
// attach GPUs to running containers (NRI cannot: see DESIGN.md); it records
// what it learns about containers in the registry so live attach can.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// Inventory returns the current GPU inventory.
type Inventory interface {
	Inventory() *gpu.Inventory
}

// Health reports whether a GPU may be handed out.
type Health interface {
	Healthy(uuid string) bool
}

// Plugin handles NRI events. Create it with New and run it with Run.
type Plugin struct {
	name, index string
	socket      string
	vendor      string // CDI vendor/class of our devices, "nvidia.com/gpu"
	inv         Inventory
	health      Health
	ledger      *ledger.Ledger
	registry    *registry.Registry
	policy      policy.Policy
	log         *logrus.Entry
	// driver and hookPath give containers the driver's user-space
	// (WithDriver); nil gives device nodes only.
	driver   Driver
	hookPath string

	// afterUpdate is told about containers whose resources the runtime
	// updated, so live grants are re-checked: runc 1.5 skips device rules on
	// update, but a runtime or cgroup manager that re-applies the spec's
	// rules (systemd on daemon-reload) would drop them.
	afterUpdate func(containerID string)
	// onSync is called after every Synchronize, connected or reconnected.
	onSync func()
	// connected is true while a runtime connection is up.
	connected atomic.Bool
	// fail, when set, is called between steps (tests: WithFailpoint).
	fail func(step string) error
	// holders confirms a GPUAttachment holder pod (SetHolders); nil: no
	// pod is one.
	holders atomic.Pointer[Holders]
	// charger charges annotation GPUs to quota (SetCharger); nil: none.
	charger atomic.Pointer[Charger]
}

// Holders confirms that a pod is the holder pod of a GPUAttachment, by the
// attachment's UID its policy.HolderAnnotation names (k8s.Agent).
type Holders interface {
	IsHolder(namespace, podName, podUID, attachmentUID string) bool
}

// SetHolders sets who confirms holder pods (the GPUAttachment agent).
func (p *Plugin) SetHolders(h Holders) { p.holders.Store(&h) }

// isHolder reports whether the pod is a confirmed GPUAttachment holder.
func (p *Plugin) isHolder(pod *api.PodSandbox) bool {
	uid := pod.GetAnnotations()[policy.HolderAnnotation]
	h := p.holders.Load()
	return uid != "" && h != nil && *h != nil &&
		(*h).IsHolder(pod.GetNamespace(), pod.GetName(), pod.GetUid(), uid)
}

// Connected reports whether the plugin is connected to the runtime now.
func (p *Plugin) Connected() bool { return p.connected.Load() }

// Option configures a Plugin.
type Option func(*Plugin) error

// WithSocket sets the NRI socket path.
func WithSocket(path string) Option { return func(p *Plugin) error { p.socket = path; return nil } }

// WithIndex sets the plugin's two-digit NRI index.
func WithIndex(idx string) Option { return func(p *Plugin) error { p.index = idx; return nil } }

// WithCDIKind sets the CDI "vendor/class" whose devices are ours.
func WithCDIKind(kind string) Option { return func(p *Plugin) error { p.vendor = kind; return nil } }

// WithPolicy sets the annotation policy.
func WithPolicy(pol policy.Policy) Option {
	return func(p *Plugin) error { p.policy = pol; return nil }
}

// WithHealth sets the GPU health source (default: every GPU healthy).
func WithHealth(h Health) Option { return func(p *Plugin) error { p.health = h; return nil } }

// WithLogger sets the logger.
func WithLogger(l *logrus.Entry) Option { return func(p *Plugin) error { p.log = l; return nil } }

// WithAfterUpdate sets the callback for containers the runtime updated.
func WithAfterUpdate(f func(string)) Option {
	return func(p *Plugin) error { p.afterUpdate = f; return nil }
}

// WithOnSync sets a callback run after each Synchronize.
func WithOnSync(f func()) Option { return func(p *Plugin) error { p.onSync = f; return nil } }

type allHealthy struct{}

func (allHealthy) Healthy(string) bool { return true }

// New returns a plugin over the shared ledger and registry.
func New(inv Inventory, l *ledger.Ledger, reg *registry.Registry, opts ...Option) (*Plugin, error) {
	p := &Plugin{
		name: "hotgpu", index: "10", socket: api.DefaultSocketPath, vendor: "nvidia.com/gpu",
		inv: inv, ledger: l, registry: reg, health: allHealthy{}, hookPath: cdi.DefaultHookPath,
		log: logrus.NewEntry(logrus.StandardLogger()),
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	if p.inv == nil || p.ledger == nil || p.registry == nil {
		return nil, errors.New("plugin needs an inventory, a ledger and a registry")
	}
	p.log = p.log.WithField("component", "nri")
	return p, nil
}

// Run connects to the runtime and serves events until ctx ends. When the
// runtime goes away (containerd restarts, the connection closes) it connects
// again with backoff; each connection starts with a Synchronize, which
// reconciles the ledger. The NRI stub itself never reconnects.
func (p *Plugin) Run(ctx context.Context, connected chan<- struct{}) error {
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		started := time.Now()
		err := p.runOnce(ctx, connected)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		p.log.WithError(err).WithField("retry_in", backoff).Warn("NRI connection ended; reconnecting")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *Plugin) runOnce(ctx context.Context, connected chan<- struct{}) error {
	s, err := stub.New(p,
		stub.WithPluginName(p.name),
		stub.WithPluginIdx(p.index),
		stub.WithSocketPath(p.socket),
		stub.WithOnClose(func() { p.log.Info("NRI connection closed by the runtime") }),
	)
	if err != nil {
		return fmt.Errorf("failed to create NRI stub: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("failed to connect to NRI at %s (is containerd running with NRI enabled?): %w", p.socket, err)
	}
	p.connected.Store(true)
	defer p.connected.Store(false)
	p.log.WithField("socket", p.socket).Info("connected to the runtime over NRI")
	if connected != nil {
		select {
		case connected <- struct{}{}:
		default:
		}
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		s.Stop()
		return ctx.Err()
	case <-done:
		return errors.New("runtime closed the connection")
	}
}

// toRegistry converts what NRI says about a container.
func toRegistry(pod *api.PodSandbox, c *api.Container) registry.Container {
	rc := registry.Container{
		ID: c.GetId(), Name: c.GetName(), PID: int(c.GetPid()),
		PodNamespace: pod.GetNamespace(), PodName: pod.GetName(), PodUID: pod.GetUid(),
		CgroupsPath: c.GetLinux().GetCgroupsPath(), Annotations: pod.GetAnnotations(),
	}
	for _, d := range c.GetLinux().GetResources().GetDevices() {
		r := registry.DeviceRule{Allow: d.GetAllow(), Type: d.GetType(), Access: d.GetAccess()}
		if d.GetMajor() != nil {
			v := d.GetMajor().GetValue()
			r.Major = &v
		}
		if d.GetMinor() != nil {
			v := d.GetMinor().GetValue()
			r.Minor = &v
		}
		rc.Rules = append(rc.Rules, r)
	}
	return rc
}

func holderOf(pod *api.PodSandbox, c *api.Container) ledger.Holder {
	return ledger.Holder{
		ContainerID: c.GetId(), Container: c.GetName(),
		PodNamespace: pod.GetNamespace(), PodName: pod.GetName(), PodUID: pod.GetUid(),
		Cgroup: c.GetLinux().GetCgroupsPath(),
		Token:  c.GetAnnotations()[policy.AllocationAnnotation],
	}
}
