package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hotgpu/hotgpu/bench"
)

// runDRABenches runs the DRA driver's benchmarks: dra's in-process Prepare
// (figure 4) and, with the cluster ones, pod start with a claim beside the
// device plugin's on the same cluster (figure 6).
func runDRABenches(ctx context.Context, repo string, o options, gb bench.GoBenches, notes map[int][]string) {
	runGoBenches(ctx, repo, o, []goBench{{"./dra", ".", 4}}, gb, notes)
	if o.clusterCount > 0 {
		runGoBenches(ctx, repo, options{goCount: o.clusterCount, benchtime: "10x"},
			[]goBench{{"./integration", "^BenchmarkClusterDRAPodStart$", 6}}, gb, notes)
	}
}

// addDRARows: Prepare beside the device plugin's Allocate (both in
// process, 8 GPUs, ledger fsynced), and claim -> Running beside
// nvidia.com/gpu -> Running, interleaved on one cluster.
func addDRARows(gb bench.GoBenches, s4, s6 *bench.Section) {
	addRow(s4, gb.Row("dra.BenchmarkPrepare/1gpu", "DRA Prepare (NodePrepareResources), 1 GPU", "", "a claim held in the ledger (fsynced) and its CDI spec written, in-process"))
	if r := gb.Row("dra.BenchmarkPrepare/8gpu", "DRA Prepare (NodePrepareResources), 8 GPUs", "", "as above, 8 GPUs in one claim"); r != nil {
		if a, ok := gb["deviceplugin.BenchmarkAllocate/file"]; ok {
			p := gb["dra.BenchmarkPrepare/8gpu"]
			r.Baseline = "device plugin Allocate/file, 8 GPUs: " + bench.FormatDuration(time.Duration(a.Median("ns/op"))) + "/op"
			r.Ratio = fmt.Sprintf("%.2f×", p.Median("ns/op")/a.Median("ns/op"))
		}
		s4.Add(*r)
	}
	b, ok := gb["integration.BenchmarkClusterDRAPodStart"]
	if !ok {
		return
	}
	ms := func(unit string) string {
		return bench.FormatDuration(time.Duration(b.Median(unit) * float64(time.Millisecond)))
	}
	s6.Add(bench.Row{
		Figure:   "pod with a ResourceClaimTemplate (1 gpu.hotgpu.dev device) create → Running",
		Hotgpu:   ms("dra1-p50-ms"),
		Baseline: "1 nvidia.com/gpu (device plugin): " + ms("gpu1-p50-ms") + "; no GPU: " + ms("plain-p50-ms"),
		Ratio:    fmt.Sprintf("%.2f× (vs device plugin)", b.Median("dra1-p50-ms")/b.Median("gpu1-p50-ms")),
		How:      "`BenchmarkClusterDRAPodStart` in integration: the three interleaved on one cluster (claim made by the controller manager, allocated by the scheduler, prepared by hotgpud), polled every 10 ms; median per run, median of runs",
	})
	if _, ok := b.Metrics["prepare-mean-ms"]; ok {
		s6.Add(bench.Row{
			Figure: "DRA Prepare in the DaemonSet's hotgpud, 1 GPU", Hotgpu: ms("prepare-mean-ms") + " (mean)", Baseline: "—",
			How: "the same run: sum / count of `hotgpu_operation_duration_seconds{op=\"dra-prepare\"}` from hotgpud's /metrics",
		})
	}
}
