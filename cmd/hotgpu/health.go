package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
)

func init() {
	register(&command{Name: "health", Summary: "show GPU health, or mark a GPU healthy/unhealthy", Run: runHealth})
}

const healthHelp = `Usage:
  hotgpu health [-o table|json] [--socket PATH]
  hotgpu health set ID healthy|unhealthy [--reason TEXT] [--socket PATH]

Without arguments, list every GPU's health: why it is unhealthy and when it
recovers by itself. A transient Xid clears after the configured recovery
window with no new error; an error that needs a GPU reset or a reboot (Xid
48, 64, 79, 92, 94, 95, 119, 120, a double-bit ECC error, a lost GPU) and a
GPU whose errors NVML cannot deliver stay unhealthy until set healthy after
the reset (a lost GPU: until NVML reads it again).

'set' marks a GPU (index or UUID) by hand. An unhealthy mark stays until the
GPU is set healthy again, which also clears an error (do it after a GPU
reset). Kubelet sees the change at once: an unhealthy GPU leaves the node's
allocatable nvidia.com/gpu, and hotgpu no longer hands it out by annotation
or live attach. On a simulated node this is how to demo a GPU failure.

Examples:
  hotgpu health
  hotgpu health set 3 unhealthy --reason "fan failure, RMA pending"
  hotgpu health set GPU-8c2f... healthy
`

func runHealth(ctx context.Context, s stdio, args []string) error {
	if len(args) > 0 && args[0] == "set" {
		return runHealthSet(ctx, s, args[1:])
	}
	fs := newFlagSet("hotgpu health", healthHelp)
	socket, output := apiFlags(fs, "table", "json")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	if err := checkFormat(*output, "table", "json"); err != nil {
		return err
	}
	list, err := api.NewClient(*socket).Health(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(s.out, list)
	}
	return printHealth(s.out, list)
}

func printHealth(out io.Writer, list []api.HealthStatus) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tHEALTH\tREASON\tSINCE\tRECOVERS")
	for _, h := range list {
		state, reason, since, recovers := "healthy", "-", "-", "-"
		if !h.Healthy {
			state, reason = "UNHEALTHY", h.Reason
			since = time.Since(h.Since).Round(time.Second).String() + " ago"
			switch {
			case h.Manual:
				recovers = "when set healthy"
			case h.Fatal:
				recovers = "after a GPU reset, when set healthy"
			case !h.RecoversAt.IsZero():
				recovers = "in " + time.Until(h.RecoversAt).Round(time.Second).String()
			default:
				recovers = "when set healthy (recovery window 0)"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Index, h.UUID, state, reason, since, recovers)
	}
	return tw.Flush()
}

func runHealthSet(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu health set", healthHelp)
	socket := fs.String("socket", defaultSocket, "hotgpud API socket")
	reason := fs.String("reason", "", "why the GPU is unhealthy (shown by hotgpu health and logged)")
	pos, err := interleaved(fs, args, s)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageErrorf("hotgpu health set needs ID and healthy|unhealthy (see 'hotgpu health --help')")
	}
	req := api.HealthSetRequest{ID: pos[0], Reason: *reason}
	switch pos[1] {
	case "healthy":
		req.Healthy = true
		if *reason != "" {
			return usageErrorf("--reason is for unhealthy")
		}
	case "unhealthy":
	default:
		return usageErrorf("state must be healthy or unhealthy, got %q", pos[1])
	}
	st, err := api.NewClient(*socket).SetHealth(ctx, req)
	if err != nil {
		return err
	}
	return printHealth(s.out, []api.HealthStatus{*st})
}

// interleaved parses flags placed before, between or after the positional
// arguments ("set 3 unhealthy --reason x") and returns the positionals.
func interleaved(fs *flag.FlagSet, args []string, s stdio) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			fs.SetOutput(s.out)
			fs.Usage()
			return nil, errHelp
		case err != nil:
			return nil, usageErrorf("%v (see '%s --help')", err, fs.Name())
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
