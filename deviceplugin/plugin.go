// Package deviceplugin is hotgpu's kubelet device plugin (API v1beta1). It
// runs inside hotgpud and shares the ledger with the NRI plugin and live
// attach, so kubelet and hotgpu never hand out the same GPU:
//
//   - ListAndWatch advertises its devices by UUID: the GPUs not in MIG mode,
//     or MIG devices (see Resources for NVIDIA's MIG strategies). A device is
//     Healthy when it is healthy (a MIG device's parent too) AND free or
//     allocated by kubelet; a GPU held by live attach or
//     a pod annotation is reported Unhealthy for as long as it is held, which
//     is the one state in which kubelet never allocates a device while still
//     counting it in the node's capacity.
//   - Allocate checks every ID, records the allocation in the ledger as an
//     unclaimed kubelet grant (the NRI plugin binds it to the container) and
//     answers with CDI device names plus HOTGPU_VISIBLE_DEVICES, so it works
//     with and without CDI in the runtime.
//   - GetPreferredAllocation is internal/alloc's exact topology-aware choice.
//
// Run registers with kubelet and registers again whenever kubelet restarts
// (it re-creates kubelet.sock and deletes our socket) or our gRPC server
// fails. This is the only package that imports k8s.io/kubelet.
package deviceplugin

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// EnvVisibleDevices carries the allocation into the container for runtimes
// without CDI; the NRI plugin reads it (policy.EnvHotGPU).
const EnvVisibleDevices = policy.EnvHotGPU

// Plugin is the device plugin. Create it with New, start it with Run.
type Plugin struct {
	inv        Inventory
	ledger     *ledger.Ledger
	health     Health
	log        *logrus.Entry
	dir        string // kubelet's device-plugins dir
	resource   string
	selector   Selector // the devices advertised (default WholeGPUs)
	cdiKind    string   // "nvidia.com/gpu"
	socketName string
	resync     time.Duration // how often ListAndWatch re-checks the inventory
	retry      time.Duration // between registration attempts
	gate       func() error  // nil, or refuses allocations while the ledger is not trustworthy
	// running says whether a container holding a kubelet grant still
	// runs (WithRunning); podsAbsent is since when SweepOrphans has missed
	// each pod in kubelet's list.
	running    func(containerID string) bool
	podsAbsent map[string]time.Time
	// near names the GPUs a preferred allocation of a given size should be
	// close to (WithNear); nil: plain topology.
	near func(size int) []string

	registered atomic.Bool
	// registrations counts successful registrations (tests, status).
	registrations atomic.Int64
	// streams counts kubelet's open ListAndWatch streams; registeredAt is
	// when kubelet last accepted us. Registered with no stream for a while
	// means kubelet lost us (a restart racing our registration).
	streams      atomic.Int64
	registeredAt atomic.Int64 // unix nanoseconds
	// lost is poked when kubelet closes a stream, to re-check at once.
	lost chan struct{}
	// changedMu guards changed, closed (and replaced) by Refresh to wake
	// every ListAndWatch stream.
	changedMu sync.Mutex
	changed   chan struct{}

	pluginapi.UnimplementedDevicePluginServer
}

// Option configures a Plugin.
type Option func(*Plugin) error

var resourceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$`)

// WithKubeletDir sets kubelet's device-plugins dir (default
// /var/lib/kubelet/device-plugins, the only one kubelet uses).
func WithKubeletDir(dir string) Option {
	return func(p *Plugin) error {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("kubelet dir %q must be an absolute path", dir)
		}
		p.dir = filepath.Clean(dir)
		return nil
	}
}

// WithResourceName sets the extended resource pods ask for (default
// nvidia.com/gpu), a "<domain>/<name>" kubelet accepts.
func WithResourceName(name string) Option {
	return func(p *Plugin) error {
		if !resourceName.MatchString(name) || strings.HasPrefix(name, "kubernetes.io/") {
			return fmt.Errorf("resource name %q is not an extended resource name such as nvidia.com/gpu", name)
		}
		p.resource = name
		return nil
	}
}

// WithDevices sets the devices the plugin advertises (default WholeGPUs):
// see Resources for the MIG strategies.
func WithDevices(s Selector) Option { return func(p *Plugin) error { p.selector = s; return nil } }

// WithCDIKind sets the CDI kind of the devices Allocate names (default
// nvidia.com/gpu, the kind of hotgpu's CDI spec).
func WithCDIKind(kind string) Option { return func(p *Plugin) error { p.cdiKind = kind; return nil } }

// WithHealth sets the health source (default: every GPU healthy).
func WithHealth(h Health) Option { return func(p *Plugin) error { p.health = h; return nil } }

// WithAllocateGate makes Allocate call gate first and refuse (Unavailable,
// which kubelet reports on the pod) while it returns an error — e.g. while
// a ledger rebuilt from a corrupt file has not yet seen the running
// containers.
func WithAllocateGate(gate func() error) Option {
	return func(p *Plugin) error { p.gate = gate; return nil }
}

// WithRunning tells the plugin whether the container holding a kubelet
// grant still runs. kubelet is the authority on its own allocations: a new
// allocation takes a GPU over from a holder that has stopped, never from one
// that runs. By default every holder counts as running.
func WithRunning(running func(containerID string) bool) Option {
	return func(p *Plugin) error { p.running = running; return nil }
}

// WithNear makes GetPreferredAllocation prefer, for an allocation of size
// GPUs, those best connected to the GPUs near(size) returns (UUIDs; none:
// plain topology). kubelet's request names no pod: near answers only when
// it knows which pod is asking (a GPUAttachment's holder pod, whose GPUs
// join its target's). It is a preference: kubelet may still choose others.
func WithNear(near func(size int) []string) Option {
	return func(p *Plugin) error { p.near = near; return nil }
}

// WithLogger sets the logger.
func WithLogger(l *logrus.Entry) Option {
	return func(p *Plugin) error { p.log = l.WithField("component", "deviceplugin"); return nil }
}

// WithResync sets how often ListAndWatch re-reads the inventory for GPUs
// that appeared or disappeared (default 10s; ledger and health changes are
// sent at once, without waiting for it).
func WithResync(d time.Duration) Option {
	return func(p *Plugin) error {
		if d <= 0 {
			return errors.New("resync interval must be positive")
		}
		p.resync = d
		return nil
	}
}

// WithRetry sets how long Run waits before registering again after a
// failure (default 2s).
func WithRetry(d time.Duration) Option {
	return func(p *Plugin) error {
		if d <= 0 {
			return errors.New("retry interval must be positive")
		}
		p.retry = d
		return nil
	}
}

// New returns a plugin for the GPUs of inv, recording allocations in l.
func New(inv Inventory, l *ledger.Ledger, opts ...Option) (*Plugin, error) {
	quiet := logrus.New()
	quiet.Out = io.Discard
	p := &Plugin{
		inv: inv, ledger: l, health: allHealthy{}, log: logrus.NewEntry(quiet),
		running: func(string) bool { return true }, selector: WholeGPUs,
		dir: filepath.Clean(pluginapi.DevicePluginPath), resource: "nvidia.com/gpu", cdiKind: "nvidia.com/gpu",
		resync: 10 * time.Second, retry: 2 * time.Second, lost: make(chan struct{}, 1),
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, fmt.Errorf("failed to configure device plugin: %w", err)
		}
	}
	if inv == nil || l == nil {
		return nil, errors.New("device plugin needs an inventory and a ledger")
	}
	p.socketName = "hotgpu-" + strings.NewReplacer("/", "-", ".", "-").Replace(p.resource) + ".sock"
	return p, nil
}

// Registered reports whether kubelet accepted the latest registration.
func (p *Plugin) Registered() bool { return p.registered.Load() }

// Registrations counts the successful registrations since the start.
func (p *Plugin) Registrations() int64 { return p.registrations.Load() }

// ResourceName is the extended resource the plugin serves.
func (p *Plugin) ResourceName() string { return p.resource }

// Socket is the path of the plugin's gRPC socket.
func (p *Plugin) Socket() string { return filepath.Join(p.dir, p.socketName) }

type allHealthy struct{}

func (allHealthy) Healthy(string) bool { return true }

func (allHealthy) Subscribe() (<-chan struct{}, func()) { return nil, func() {} }
