//go:build cgo

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/doctor"
)

func init() {
	register(&command{Name: "doctor", Summary: doctorSummary, Run: runDoctor})
	register(&command{Name: doctor.SandboxArg, Summary: "the attach test's sandbox process", Run: runDoctorSandbox, Hidden: true})
}

const doctorHelp = `hotgpu doctor checks whether this node can give containers GPUs, step by
step, and says for each check ok, warn or fail and what to do:

  driver       NVML loads; driver and CUDA versions; every GPU (index, minor,
               UUID, PCI bus, MIG mode, lost); the kernel's majors
               (/proc/devices) and the host's /dev/nvidia* nodes
  cdi          the CDI spec hotgpud wrote (or would write) validates with the
               CDI library, names every GPU, and the driver files it mounts
               and the hooks it runs exist
  runtime      containerd's NRI as hotgpud sees it, the CDI spec directory,
               the cgroup version and driver (cgroupfs or systemd)
  hotgpud      reachable (no socket and a stale socket are told apart), its
               ledger, its kubelet registration, its last reconcile
  attach-test  with --attach-test only: a throwaway sandbox (a process in its
               own mount namespace and device cgroup) gets a free GPU attached
               live through hotgpud, opens it (ENXIO without a driver), has it
               detached (EPERM after), and nothing is left behind

It reads the node and changes nothing, except what --attach-test makes and
removes again. The exit status is 1 when a check fails. It runs in
hotgpu-cdi, the cgo build of hotgpu installed next to it, which reads NVML.

Usage:
  hotgpu doctor [--driver-root DIR] [--socket PATH] [-o text|json] [--attach-test]

Examples:
  hotgpu doctor
  hotgpu doctor --attach-test
  hotgpu doctor -o json > doctor.json       # for scripts and support bundles
  hotgpu doctor --simulate dgxa100 --socket /tmp/hotgpud.sock
`

// nvmlArgs are the flags that decide what NVML (or the simulation) reads.
type nvmlArgs struct {
	simulate, driverRoot, devRoot string
}

func (a *nvmlArgs) register(fs *flag.FlagSet) {
	fs.StringVar(&a.simulate, "simulate", "", "check a simulated node instead of NVML's (dgxa100, pcie8, ...: as hotgpud --simulate)")
	fs.StringVar(&a.driverRoot, "driver-root", "", "root the NVIDIA driver is installed under (default /; /run/nvidia/driver with a driver container)")
	fs.StringVar(&a.devRoot, "dev-root", "/", "root under which the host's /dev is found")
}

func runDoctor(ctx context.Context, s stdio, args []string) error {
	var a nvmlArgs
	fs := newFlagSet("hotgpu doctor", doctorHelp)
	a.register(fs)
	socket, output := apiFlags(fs, "text", "json")
	cdiDir := fs.String("cdi-dir", doctor.DefaultCDIDir, "where to look for hotgpud's CDI spec when hotgpud does not say")
	attachTest := fs.Bool("attach-test", false, "also attach a free GPU live to a throwaway sandbox and detach it (root)")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	if err := checkFormat(*output, "text", "json"); err != nil {
		return err
	}
	cfg := doctor.Config{Simulate: a.simulate, Socket: *socket, Daemon: api.NewClient(*socket), DriverRoot: a.driverRoot, DriverRootSet: a.driverRoot != "",
		DevRoot: a.devRoot, DevRootSet: a.devRoot != "/", CDIDir: *cdiDir, AttachTest: *attachTest}
	f := specFlags{simulate: a.simulate, driverRoot: a.driverRoot, devRoot: a.devRoot}
	cfg.Inventory, cfg.InventoryErr = f.inventory()
	if *attachTest {
		self := findSelf()
		if self == "" {
			return errors.New("hotgpu doctor --attach-test re-runs hotgpu as its sandbox and cannot find its own binary (/proc/self/exe)")
		}
		cfg.SandboxArgv = []string{self}
	}
	report := doctor.Run(ctx, cfg)
	var err error
	if *output == "json" {
		err = printJSON(s.out, report)
	} else {
		err = printReport(s.out, report)
	}
	if err == nil && report.Failed {
		err = fmt.Errorf("%d check(s) failed", report.Count(doctor.Fail))
	}
	return err
}

// printReport prints the checks step by step, what to do under each.
func printReport(out io.Writer, r *doctor.Report) error {
	last := ""
	for _, c := range r.Checks {
		if c.Step != last {
			fmt.Fprintf(out, "%s:\n", c.Step)
			last = c.Step
		}
		fmt.Fprintf(out, "  %-4s %-24s %s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(out, "       %-24s -> %s\n", "", c.Fix)
		}
	}
	_, err := fmt.Fprintf(out, "%d ok, %d warn, %d fail, %d skipped\n", r.Count(doctor.OK), r.Count(doctor.Warn), r.Count(doctor.Fail), r.Count(doctor.Skip))
	return err
}

const sandboxHelp = `Usage:
  hotgpu ` + doctor.SandboxArg + ` ROOT

The attach test's sandbox process: hotgpu doctor --attach-test runs it in a
new mount namespace and device cgroup and drives it over stdin and stdout.
`

func runDoctorSandbox(_ context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu "+doctor.SandboxArg, sandboxHelp)
	pos, err := interleaved(fs, args, s)
	if err != nil {
		return err
	}
	if code := doctor.SandboxMain(pos, s.in, s.out); code != 0 {
		return exitStatus(code)
	}
	return nil
}
