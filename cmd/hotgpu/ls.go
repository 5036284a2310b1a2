package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

func init() {
	register(&command{Name: "ls", Summary: "list GPUs, their health and who holds them", Run: runLs})
	register(&command{Name: "status", Summary: "show hotgpud's status", Run: runStatus})
}

const lsHelp = `Usage: hotgpu ls [-o table|json] [--socket PATH]

List every GPU of the node, and every MIG device ("0:1", under its GPU),
with its health and the container holding it, and why: kubelet (device plugin allocation), annotation (pod annotation at
creation), attach (live attach) or hook (OCI hook). A GPU shown QUARANTINED
was detached (--force) while a process still held it open or mapped: no one
gets it until that process lets go, which hotgpud checks at every reconcile.
`

const statusHelp = `Usage: hotgpu status [-o text|json] [--socket PATH]

Show hotgpud's version, GPUs, NRI connection, device plugin, CDI spec, how often
it re-checks live grants (reconcile) and when it last did, and any problem
that needs an operator.
`

func runLs(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu ls", lsHelp)
	socket, output := apiFlags(fs, "table", "json")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	if err := checkFormat(*output, "table", "json"); err != nil {
		return err
	}
	gpus, err := api.NewClient(*socket).GPUs(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(s.out, gpus)
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tNAME\tHEALTH\tHELD BY\tWHY\tSINCE")
	for _, g := range gpus {
		health := "healthy"
		if !g.Healthy {
			health = "UNHEALTHY"
		}
		holder, why, since := "-", "-", "-"
		if g.Grant != nil {
			holder, why = grantHolder(g.Grant)
			since = time.Since(g.Grant.Since).Round(time.Second).String()
		}
		name := g.Name
		if g.Instance != nil {
			name = "MIG " + g.Instance.Profile
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID(), g.UUID, name, health, holder, why, since)
	}
	return tw.Flush()
}

// reconcileLine says how often hotgpud re-checks live grants and when it
// last did: a stale time means the reconcile loop is stuck.
func reconcileLine(st *api.Status, now time.Time) string {
	every := "every " + st.ReconcileInterval
	if st.ReconcileInterval == "" {
		every = "off"
	}
	if st.LastReconcile.IsZero() {
		return every + ", none yet"
	}
	return fmt.Sprintf("%s, last %s ago", every, now.Sub(st.LastReconcile).Round(time.Second))
}

// grantHolder is the HELD BY and WHY columns of a grant. A quarantined GPU
// is held by no container: WHY says which process keeps it.
func grantHolder(g *ledger.Grant) (holder, why string) {
	if g.Reason == ledger.Quarantine {
		return "QUARANTINED", "quarantine: " + g.Note
	}
	why = string(g.Reason)
	if g.State != ledger.Active {
		why += " (" + string(g.State) + ")"
	}
	return g.Holder.String(), why
}

func runStatus(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu status", statusHelp)
	socket, output := apiFlags(fs, "text", "json")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	if err := checkFormat(*output, "text", "json"); err != nil {
		return err
	}
	st, err := api.NewClient(*socket).Status(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(s.out, st)
	}
	mode := "real GPUs"
	if st.Simulated != "" {
		mode = "simulated (" + st.Simulated + ")"
	}
	nri := "disconnected"
	if st.NRIConnected {
		nri = "connected"
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"hotgpud", st.Version + ", up " + st.Uptime},
		{"GPUs", fmt.Sprintf("%d (%s), %d held, %d unhealthy", st.GPUs, mode, st.Held, st.Unhealthy)},
		{"driver", st.DriverVersion + ", CUDA " + st.CUDAVersion},
		{"NRI", fmt.Sprintf("%s, %d containers known", nri, st.Containers)},
		{"device plugin", st.DevicePlugin},
		{"CDI spec", st.CDISpec},
		{"reconcile", reconcileLine(st, time.Now())},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	for _, p := range st.Problems {
		fmt.Fprintf(tw, "problem:\t%s\n", p)
	}
	return tw.Flush()
}
