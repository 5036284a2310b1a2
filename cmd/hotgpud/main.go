// Command hotgpud is hotgpu's node daemon: a containerd NRI plugin that gives
// pod containers GPUs at creation, the writer of the node's CDI spec, and the
// server of live GPU attach/detach for running containers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
	"github.com/hotgpu/hotgpu/internal/daemon"
	"github.com/hotgpu/hotgpu/internal/version"
)

const usage = `hotgpud - give containers NVIDIA GPUs, at creation and while they run

Usage: hotgpud [flags]

hotgpud connects to containerd over NRI and injects /dev/nvidiaN nodes, one
cgroup rule per GPU and NVIDIA_VISIBLE_DEVICES into pod containers that were
allocated GPUs by kubelet or that ask for them with the pod annotation
  gpus.hotgpu.dev/container.<container-name>: "<count>" | "<id>,<id>,..."
(honoured only in namespaces listed with --annotation-namespaces). It writes a
CDI spec for nvidia.com/gpu so ctr, nerdctl and CRI can use --device
nvidia.com/gpu=N without it, and serves live attach/detach for the hotgpu CLI
on a root-only unix socket. With a Kubernetes API (--kubeconfig, or the
in-cluster config of its DaemonSet pod) it also carries out the GPUAttachments
of its node's pods (kubectl hotgpu attach; see docs/kubernetes.md).

Without a GPU, run with --simulate dgxa100 (8 x A100, NVSwitch) or
--simulate pcie8 (8 GPUs, PCIe pairs).

Flags (override the config file):
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "hotgpud:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, log, err := parse(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(cfg, log)
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"version": version.Version, "simulate": cfg.Simulate, "gpus": len(d.Inventory().GPUs)}).Info("hotgpud starting")
	return d.Run(ctx)
}

func parse(args []string) (*configv1.Config, *logrus.Entry, error) {
	fs := flag.NewFlagSet("hotgpud", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	def := configv1.Default()
	// Each setting flag keeps how it applies to the config: only flags given
	// on the command line override the file.
	set := map[string]func(*configv1.Config){}
	str := func(name, value, usage string, apply func(*configv1.Config, string)) {
		p := fs.String(name, value, usage)
		set[name] = func(c *configv1.Config) { apply(c, *p) }
	}
	boolean := func(name, usage string, apply func(*configv1.Config, bool)) {
		p := fs.Bool(name, false, usage)
		set[name] = func(c *configv1.Config) { apply(c, *p) }
	}
	configPath := fs.String("config", "", "config file (YAML, version: v1); see etc/hotgpud.yaml")
	str("simulate", "", "serve a simulated GPU inventory: dgxa100 or pcie8",
		func(c *configv1.Config, v string) { c.Simulate = v })
	str("simulate-mig", "", `with --simulate: GPUs in MIG mode at start, "GPU=PROFILE,PROFILE[;GPU=...]" (e.g. "0=3g.20gb,2g.10gb,1g.5gb,1g.5gb")`,
		func(c *configv1.Config, v string) { c.SimulateMIG = splitOn(v, ";") })
	str("mig-strategy", def.DevicePlugin.MIGStrategy, "how the device plugin advertises MIG devices: none, single or mixed (as NVIDIA's device plugin)",
		func(c *configv1.Config, v string) { c.DevicePlugin.MIGStrategy = v })
	str("state-dir", def.StateDir, "where the ledger is kept",
		func(c *configv1.Config, v string) { c.StateDir = v })
	str("nri-socket", def.NRI.Socket, "containerd's NRI socket",
		func(c *configv1.Config, v string) { c.NRI.Socket = v })
	str("cdi-dir", def.CDI.Dir, "CDI spec directory the runtime reads",
		func(c *configv1.Config, v string) { c.CDI.Dir = v })
	str("api-socket", def.API.Socket, "unix socket of the attach/detach API (root only)",
		func(c *configv1.Config, v string) { c.API.Socket = v })
	str("driver-root", def.DriverRoot, "root of the NVIDIA driver installation; with --simulate, a root other than / is used like a real one (a fake driver root for tests)",
		func(c *configv1.Config, v string) { c.DriverRoot = v })
	str("hook-path", def.HookPath, "host path of hotgpu-hook, which the CDI spec and the NRI plugin run to link and register the driver libraries",
		func(c *configv1.Config, v string) { c.HookPath = v })
	str("annotation-namespaces", "", "comma-separated namespaces whose pods may ask for GPUs by annotation (default: none)",
		func(c *configv1.Config, v string) { c.Annotations.Namespaces = splitList(v) })
	maxPer := fs.Int("annotation-max", def.Annotations.MaxPerContainer, "most GPUs one container may ask for by annotation")
	set["annotation-max"] = func(c *configv1.Config) { c.Annotations.MaxPerContainer = *maxPer }
	str("metrics-address", def.Metrics.Address, `serve /metrics, /healthz and /readyz on this host:port, e.g. ":9402" (default: off)`,
		func(c *configv1.Config, v string) { c.Metrics.Address = v })
	boolean("no-nri", "do not connect to containerd over NRI (CDI and live attach only)",
		func(c *configv1.Config, v bool) { c.NRI.Disabled = v })
	boolean("no-device-plugin", "do not serve kubelet as a device plugin (nodes without kubelet)",
		func(c *configv1.Config, v bool) { c.DevicePlugin.Disabled = v })
	str("kubelet-dir", def.DevicePlugin.KubeletDir, "kubelet's device-plugins dir (kubelet.sock is there)",
		func(c *configv1.Config, v string) { c.DevicePlugin.KubeletDir = v })
	str("kubeconfig", "", "kubeconfig of the GPUAttachment node agent (default: the in-cluster config in a pod; no Kubernetes API at all otherwise)",
		func(c *configv1.Config, v string) { c.Kubernetes.Kubeconfig = v })
	str("node-name", "", "this node's name for the GPUAttachment agent (default: $NODE_NAME, then the hostname)",
		func(c *configv1.Config, v string) { c.Kubernetes.NodeName = v })
	str("holder-image", def.Kubernetes.HolderImage, `pause image of the GPUAttachment holder pods that account attached GPUs ("" attaches without holders: nothing is charged)`,
		func(c *configv1.Config, v string) { c.Kubernetes.HolderImage = v })
	boolean("dra", "serve kubelet as the DRA driver gpu.hotgpu.dev too (needs the Kubernetes API: --kubeconfig, or in a pod)",
		func(c *configv1.Config, v bool) { c.DRA.Enabled = v })
	str("kubelet-root-dir", def.DRA.KubeletRootDir, "kubelet's --root-dir: the DRA plugin registers in <dir>/plugins_registry",
		func(c *configv1.Config, v string) { c.DRA.KubeletRootDir = v })
	showVersion := fs.Bool("version", false, "print the version and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log JSON lines")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if *showVersion {
		fmt.Println("hotgpud", version.Version)
		return nil, nil, flag.ErrHelp
	}
	cfg := def
	if *configPath != "" {
		var err error
		if cfg, err = configv1.Load(*configPath); err != nil {
			return nil, nil, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if apply, ok := set[f.Name]; ok {
			apply(cfg)
		}
	})
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	logger := logrus.New()
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid --log-level: %w", err)
	}
	logger.SetLevel(lvl)
	if *logJSON {
		logger.SetFormatter(&logrus.JSONFormatter{})
	}
	return cfg, logrus.NewEntry(logger), nil
}

func splitList(s string) []string { return splitOn(s, ",") }

func splitOn(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
