package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hotgpu/hotgpu/hooks"
	"github.com/hotgpu/hotgpu/internal/api"
)

const prestartUsage = `prestart gives GPUs to a container that a runtime without NRI creates (runc
under Docker, podman and CRI-O through hooks.d). Configure it for the prestart
(or createRuntime) stage and for poststop; it reads the OCI state on stdin and
acts on its status: "creating" grants, "stopped" releases.

The container asks with the OCI annotation
  gpus.hotgpu.dev/devices=0,GPU-…        (indices or UUIDs, or "all")
or, without it, HOTGPU_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES in its
environment. Values are user input: only GPU indices and UUIDs are accepted,
and "all" only with --allow-all (CUDA images set NVIDIA_VISIBLE_DEVICES=all,
which without --allow-all gives nothing). Containers made by Kubernetes are
left alone: their GPUs come from kubelet or hotgpud's NRI plugin.

For each GPU it writes one cgroup rule (c 195:N rwm; never a wildcard) and
creates /dev/nvidiaN, /dev/nvidiactl and /dev/nvidia-uvm* inside the
container, walking the container's /dev without following any symlink. It
also gives the container the driver's user-space that a CDI spec would: the
driver's libraries, binaries and firmware mounted read-only at their own
paths, the SONAME and libcuda.so links beside them, and the linker cache
rebuilt (the host's ldconfig -r on the container's root), so CUDA can use the
GPUs. An OCI hook cannot add mounts to the spec, so it mounts them into the
container's mount namespace itself, before pivot_root (a read-only root is
made read-only after it). hotgpud names the files; with --standalone and no
hotgpud they are found under --driver-root for the kernel module's version.
The GPUs are first recorded in hotgpud's ledger (a GPU held by another container
is refused). When hotgpud does not answer (its socket is missing or stale),
the hook fails closed: the container is not created and nothing is granted,
since a grant hotgpud does not know about could give a pod's GPU to a second
container. Only with --standalone does it then work alone from the driver's
/proc/driver/nvidia, recording nothing: use that only on nodes where this hook
is the one thing handing out GPUs (no hotgpud, no Kubernetes GPU pods).

Usage:
  hotgpu-hook prestart [--api-socket PATH] [--allow-all] [--standalone]

Example (/etc/containers/oci/hooks.d/hotgpu.json, see etc/hooks.d):
  {"version": "1.0.0", "hook": {"path": "/usr/local/bin/hotgpu-hook",
   "args": ["hotgpu-hook", "prestart"]}, "when": {"always": true},
   "stages": ["prestart", "poststop"]}

Flags:
`

func prestart(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hotgpu-hook prestart", flag.ContinueOnError)
	socket := fs.String("api-socket", api.DefaultSocket, `hotgpud's API socket, to record grants in its ledger ("" = never, with --standalone only)`)
	allowAll := fs.Bool("allow-all", false, `let containers ask for every GPU with "all"`)
	standalone := fs.Bool("standalone", false, "when hotgpud does not answer, grant from the driver's procfs without any ledger (default: fail)")
	driverProc := fs.String("driver-proc", hooks.DefaultDriverProc, "the NVIDIA driver's procfs directory, read in --standalone mode when hotgpud is not running")
	procDevices := fs.String("proc-devices", hooks.DefaultProcDevices, "the kernel's device major list")
	driverRoot := fs.String("driver-root", "/", `where the driver's files are, in --standalone mode when hotgpud is not running ("" = give none)`)
	timeout := fs.Duration("timeout", 8*time.Second, "give up after this long (below the runtime's hook timeout, 10 s in etc/hooks.d, so the hook can still roll back)")
	if code, ok := parseCommand(fs, prestartUsage, args, stdout, stderr); !ok {
		return code
	}
	if *socket == "" && !*standalone {
		fmt.Fprintln(stderr, `hotgpu-hook: prestart needs hotgpud's --api-socket; --api-socket "" works only with --standalone (see 'hotgpu-hook prestart --help')`)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	h := hooks.NewPrestart(*socket, *allowAll, stderr)
	if *standalone {
		h = hooks.NewStandalone(*socket, *allowAll, stderr).WithDriverProc(*driverProc, *procDevices)
		h.DriverRoot = *driverRoot
	}
	if err := h.Run(ctx, stdin); err != nil {
		fmt.Fprintf(stderr, "hotgpu-hook: %v\n", err)
		return 1
	}
	return 0
}
