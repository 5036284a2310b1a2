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
on a root-only unix socket.

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
	configPath := fs.String("config", "", "config file (YAML, version: v1); see etc/hotgpud.yaml")
	simulate := fs.String("simulate", "", "serve a simulated GPU inventory: dgxa100 or pcie8")
	stateDir := fs.String("state-dir", def.StateDir, "where the ledger is kept")
	nriSocket := fs.String("nri-socket", def.NRI.Socket, "containerd's NRI socket")
	cdiDir := fs.String("cdi-dir", def.CDI.Dir, "CDI spec directory the runtime reads")
	apiSocket := fs.String("api-socket", def.API.Socket, "unix socket of the attach/detach API (root only)")
	driverRoot := fs.String("driver-root", def.DriverRoot, "root of the NVIDIA driver installation")
	namespaces := fs.String("annotation-namespaces", "", "comma-separated namespaces whose pods may ask for GPUs by annotation (default: none)")
	maxPer := fs.Int("annotation-max", def.Annotations.MaxPerContainer, "most GPUs one container may ask for by annotation")
	metricsAddr := fs.String("metrics-address", def.Metrics.Address, `serve /metrics, /healthz and /readyz on this host:port, e.g. ":9402" (default: off)`)
	noNRI := fs.Bool("no-nri", false, "do not connect to containerd over NRI (CDI and live attach only)")
	noDevicePlugin := fs.Bool("no-device-plugin", false, "do not serve kubelet as a device plugin (nodes without kubelet)")
	kubeletDir := fs.String("kubelet-dir", def.DevicePlugin.KubeletDir, "kubelet's device-plugins dir (kubelet.sock is there)")
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
	// Flags given on the command line override the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "simulate":
			cfg.Simulate = *simulate
		case "state-dir":
			cfg.StateDir = *stateDir
		case "nri-socket":
			cfg.NRI.Socket = *nriSocket
		case "cdi-dir":
			cfg.CDI.Dir = *cdiDir
		case "api-socket":
			cfg.API.Socket = *apiSocket
		case "driver-root":
			cfg.DriverRoot = *driverRoot
		case "annotation-namespaces":
			cfg.Annotations.Namespaces = splitList(*namespaces)
		case "annotation-max":
			cfg.Annotations.MaxPerContainer = *maxPer
		case "metrics-address":
			cfg.Metrics.Address = *metricsAddr
		case "no-nri":
			cfg.NRI.Disabled = *noNRI
		case "no-device-plugin":
			cfg.DevicePlugin.Disabled = *noDevicePlugin
		case "kubelet-dir":
			cfg.DevicePlugin.KubeletDir = *kubeletDir
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

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
