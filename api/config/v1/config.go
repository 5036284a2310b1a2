// Package v1 is version 1 of hotgpud's configuration file.
//
// The file is YAML (or JSON) with a mandatory `version: v1`; unknown keys and
// unknown versions are rejected rather than silently ignored, because a typo
// in a security setting (say, annotation namespaces) must not fall back to a
// default the operator did not choose. Command-line flags override the file.
// This package knows nothing about flags or the daemon's internals.
package v1

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Version is the only configuration version this package reads.
const Version = "v1"

// Config is hotgpud's configuration.
type Config struct {
	Version string `json:"version"`
	// Simulate serves a simulated GPU inventory instead of NVML ("dgxa100",
	// "pcie8"); empty means real GPUs.
	Simulate string `json:"simulate,omitempty"`
	// SimulateMIG puts simulated GPUs in MIG mode at start, one entry per
	// GPU: "<slot>=<profile>,<profile>..." ("0=3g.20gb,2g.10gb,1g.5gb,1g.5gb").
	SimulateMIG []string `json:"simulateMIG,omitempty"`
	// DriverRoot is where the NVIDIA driver's files live ("/" on a host,
	// "/run/nvidia/driver" with the GPU operator's driver container).
	DriverRoot string `json:"driverRoot,omitempty"`
	// DevRoot prefixes host device node paths in CDI specs.
	DevRoot string `json:"devRoot,omitempty"`
	// StateDir holds the persisted ledger.
	StateDir string `json:"stateDir"`
	// HookPath is where hotgpu-hook is installed on the host; CDI specs
	// reference it.
	HookPath string `json:"hookPath"`

	NRI          NRI          `json:"nri"`
	CDI          CDI          `json:"cdi"`
	API          API          `json:"api"`
	Annotations  Annotations  `json:"annotations"`
	DevicePlugin DevicePlugin `json:"devicePlugin"`
	Metrics      Metrics      `json:"metrics"`
	Health       Health       `json:"health"`
	Kubernetes   Kubernetes   `json:"kubernetes,omitempty"`
	DRA          DRA          `json:"dra,omitempty"`
	// ReconcileInterval is how often live grants are re-checked against the
	// containers' cgroups and re-applied when something reset them.
	ReconcileInterval Duration `json:"reconcileInterval"`
}

// Kubernetes configures the GPUAttachment node agent (package k8s). It runs
// when Kubeconfig is set or hotgpud runs in a pod (in-cluster config), and
// not at all otherwise.
type Kubernetes struct {
	// Kubeconfig is a kubeconfig file; empty means the in-cluster config.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// NodeName is this node; empty means $NODE_NAME, then the hostname.
	NodeName string `json:"nodeName,omitempty"`
	// HolderImage is the pause image of the holder pods through which
	// attachments are accounted (ResourceQuota, kubelet, the scheduler):
	// each asks the attachment's GPUs, and kubelet's allocation is moved
	// into the target container. Empty attaches without a holder pod, and
	// an attached GPU is then not charged to the namespace.
	HolderImage string `json:"holderImage"`
}

// DRA configures the DRA kubelet plugin, driver gpu.hotgpu.dev (package
// dra). It needs the Kubernetes API of Kubernetes (the kubeconfig or the
// in-cluster config).
type DRA struct {
	Enabled bool `json:"enabled,omitempty"`
	// KubeletRootDir is kubelet's --root-dir: the plugin registers in
	// <root>/plugins_registry and listens in <root>/plugins/gpu.hotgpu.dev.
	KubeletRootDir string `json:"kubeletRootDir,omitempty"`
}

// NRI configures the containerd NRI plugin.
type NRI struct {
	Disabled bool   `json:"disabled,omitempty"`
	Socket   string `json:"socket"`
	// PluginIndex orders hotgpu among NRI plugins (two digits).
	PluginIndex string `json:"pluginIndex"`
}

// CDI configures the CDI spec hotgpud keeps up to date.
type CDI struct {
	Disabled bool   `json:"disabled,omitempty"`
	Dir      string `json:"dir"`
	Vendor   string `json:"vendor"`
	Class    string `json:"class"`
}

// API configures the live attach/detach socket.
type API struct {
	Socket string `json:"socket"`
	// Group, when set, may use the API besides root (the socket is then
	// 0660 and owned by that group).
	Group string `json:"group,omitempty"`
}

// Annotations is the policy for pod annotations asking for GPUs. Annotations
// are user input: they are honoured only in the listed namespaces, up to
// MaxPerContainer GPUs, and only from GPUs no one holds.
type Annotations struct {
	Namespaces      []string `json:"namespaces,omitempty"`
	MaxPerContainer int      `json:"maxPerContainer"`
}

// DevicePlugin configures the kubelet device plugin.
type DevicePlugin struct {
	Disabled     bool   `json:"disabled,omitempty"`
	KubeletDir   string `json:"kubeletDir"`
	ResourceName string `json:"resourceName"`
	// PodResourcesSocket is kubelet's PodResources API, used to release
	// allocations whose pod was deleted before its container started.
	PodResourcesSocket string `json:"podResourcesSocket"`
	// PodResourcesInterval is how often PodResources is asked which pods
	// still run, to release the GPUs of a deleted or finished pod within
	// seconds rather than when its sandbox is removed.
	PodResourcesInterval Duration `json:"podResourcesInterval"`
	// MIGStrategy is how MIG devices are advertised, as NVIDIA's device
	// plugin names it: "none" (whole GPUs only; GPUs in MIG mode are not
	// advertised), "single" (every GPU in MIG mode with one profile, the
	// MIG devices advertised as resourceName) or "mixed" (whole GPUs as
	// resourceName, the MIG devices of each profile as
	// MIGResourcePrefix+<profile>, e.g. nvidia.com/mig-1g.5gb).
	MIGStrategy string `json:"migStrategy"`
	// MIGResourcePrefix names the MIG resources under mixed: the prefix
	// and the profile ("nvidia.com/mig-" gives nvidia.com/mig-1g.5gb, as
	// NVIDIA's device plugin).
	MIGResourcePrefix string `json:"migResourcePrefix"`
}

// Health configures GPU health tracking from NVML error events.
type Health struct {
	// Disabled stops watching NVML events; GPUs then change health only
	// through the API (hotgpu health set).
	Disabled bool `json:"disabled,omitempty"`
	// RecoveryWindow is how long a GPU must go without a new error before it
	// is healthy again; "0s" means never by itself.
	RecoveryWindow Duration `json:"recoveryWindow"`
	// IgnoredXids are Xids that are application errors, not GPU faults. The
	// list replaces the default (13, 31, 43, 45, 68, 109), it does not add
	// to it.
	IgnoredXids []uint64 `json:"ignoredXids"`
}

// Metrics configures the Prometheus endpoint (/metrics, /healthz, /readyz).
type Metrics struct {
	// Address is the TCP host:port to serve on (":9402"); empty serves
	// nothing. Metrics reveal no GPU ids or container names beyond counts,
	// but bind to a private address where pods of other tenants could reach it.
	Address string `json:"address,omitempty"`
}

// Duration is a time.Duration written as "30s" in the file.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads "30s"-style durations.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' {
		return fmt.Errorf("duration must be a string such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		Version:    Version,
		DriverRoot: "/",
		StateDir:   "/var/lib/hotgpu",
		HookPath:   "/usr/local/bin/hotgpu-hook",
		NRI:        NRI{Socket: "/var/run/nri/nri.sock", PluginIndex: "10"},
		CDI:        CDI{Dir: "/var/run/cdi", Vendor: "nvidia.com", Class: "gpu"},
		API:        API{Socket: "/run/hotgpu/hotgpu.sock"}, // api.DefaultSocket; config imports no daemon package
		Annotations: Annotations{
			MaxPerContainer: 1,
		},
		DevicePlugin: DevicePlugin{
			KubeletDir:           "/var/lib/kubelet/device-plugins",
			ResourceName:         "nvidia.com/gpu",
			PodResourcesSocket:   "/var/lib/kubelet/pod-resources/kubelet.sock",
			PodResourcesInterval: Duration{2 * time.Second},
			MIGStrategy:          "none",
			MIGResourcePrefix:    "nvidia.com/mig-",
		},
		Health: Health{
			RecoveryWindow: Duration{5 * time.Minute},
			IgnoredXids:    []uint64{13, 31, 43, 45, 68, 109},
		},
		DRA:               DRA{KubeletRootDir: "/var/lib/kubelet"},
		ReconcileInterval: Duration{30 * time.Second},
		Kubernetes:        Kubernetes{HolderImage: "registry.k8s.io/pause:3.10"},
	}
}

// Load reads path over the defaults and validates the result.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration document over the defaults and validates it.
func Parse(data []byte) (*Config, error) {
	var probe struct {
		Version string `json:"version"`
	}
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if probe.Version != Version {
		return nil, fmt.Errorf("unsupported version %q: this hotgpud reads version %q", probe.Version, Version)
	}
	c := Default()
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var (
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	pluginIdx = regexp.MustCompile(`^[0-9]{2}$`)
	cdiName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// resourceName is a kubelet extended resource: "<dns domain>/<name>".
	resourceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$`)
)

// Validate checks the configuration and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Version != Version {
		bad("version must be %q", Version)
	}
	for name, p := range map[string]string{
		"stateDir": c.StateDir, "nri.socket": c.NRI.Socket, "cdi.dir": c.CDI.Dir,
		"api.socket": c.API.Socket, "devicePlugin.kubeletDir": c.DevicePlugin.KubeletDir,
		"devicePlugin.podResourcesSocket": c.DevicePlugin.PodResourcesSocket,
		"hookPath":                        c.HookPath, "driverRoot": c.DriverRoot,
		"dra.kubeletRootDir": c.DRA.KubeletRootDir,
	} {
		if p == "" || !filepath.IsAbs(p) {
			bad("%s must be an absolute path, got %q", name, p)
		}
	}
	if c.DevRoot != "" && !filepath.IsAbs(c.DevRoot) {
		bad("devRoot must be an absolute path, got %q", c.DevRoot)
	}
	if !pluginIdx.MatchString(c.NRI.PluginIndex) {
		bad("nri.pluginIndex must be two digits, got %q", c.NRI.PluginIndex)
	}
	if !cdiName.MatchString(c.CDI.Vendor) || !cdiName.MatchString(c.CDI.Class) {
		bad("cdi.vendor and cdi.class must be CDI names (letters, digits, '.', '_', '-'), got %q and %q", c.CDI.Vendor, c.CDI.Class)
	}
	for _, ns := range c.Annotations.Namespaces {
		if !dnsLabel.MatchString(ns) {
			bad("annotations.namespaces: %q is not a Kubernetes namespace name", ns)
		}
	}
	if c.Annotations.MaxPerContainer < 0 || c.Annotations.MaxPerContainer > 64 {
		bad("annotations.maxPerContainer must be between 0 and 64, got %d", c.Annotations.MaxPerContainer)
	}
	if c.Health.RecoveryWindow.Duration < 0 {
		bad("health.recoveryWindow must not be negative, got %s", c.Health.RecoveryWindow.Duration)
	}
	if !resourceName.MatchString(c.DevicePlugin.ResourceName) {
		bad("devicePlugin.resourceName must be an extended resource name such as nvidia.com/gpu, got %q", c.DevicePlugin.ResourceName)
	}
	for _, m := range c.SimulateMIG {
		slot, profiles, ok := strings.Cut(m, "=")
		if c.Simulate == "" || !ok || slot == "" || profiles == "" {
			bad("simulateMIG entries are \"<gpu>=<profile>,...\" and need simulate, got %q", m)
		}
	}
	if !resourceName.MatchString(c.DevicePlugin.MIGResourcePrefix + "1g.5gb") {
		bad("devicePlugin.migResourcePrefix must make extended resource names such as nvidia.com/mig-1g.5gb, got %q", c.DevicePlugin.MIGResourcePrefix)
	}
	switch c.DevicePlugin.MIGStrategy {
	case "none", "single", "mixed":
	default:
		bad("devicePlugin.migStrategy must be none, single or mixed, got %q", c.DevicePlugin.MIGStrategy)
	}
	if c.Metrics.Address != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			bad("metrics.address must be host:port such as \":9402\", got %q", c.Metrics.Address)
		}
	}
	if c.DevicePlugin.PodResourcesInterval.Duration < 100*time.Millisecond {
		bad("devicePlugin.podResourcesInterval must be at least 100ms, got %s", c.DevicePlugin.PodResourcesInterval.Duration)
	}
	if c.ReconcileInterval.Duration < time.Second {
		bad("reconcileInterval must be at least 1s, got %s", c.ReconcileInterval.Duration)
	}
	return errors.Join(errs...)
}
