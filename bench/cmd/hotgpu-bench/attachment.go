package main

import (
	"time"

	"github.com/hotgpu/hotgpu/bench"
)

// attachmentBench is integration's GPUAttachment benchmark (figure 6).
var attachmentBench = goBench{"./integration", "^BenchmarkGPUAttachment$", 6}

// attachmentRows adds figure 6's GPUAttachment rows: created → usable in the
// container with its steps, and deleted → gone.
func attachmentRows(gb bench.GoBenches, s *bench.Section) {
	b, ok := gb["integration.BenchmarkGPUAttachment"]
	if !ok {
		return
	}
	ms := func(unit string) string {
		return bench.FormatDuration(time.Duration(b.Median(unit) * float64(time.Millisecond)))
	}
	s.Add(bench.Row{
		Figure: "GPUAttachment created → GPU usable in the running container (1 GPU, holder pod admission included)",
		Hotgpu: ms("attach-usable-p50-ms"), Baseline: "—", Target: "p50 < 1 s",
		How: "`BenchmarkGPUAttachment` in integration: from the create call's return to a `ctr tasks exec cat /dev/nvidiaN` in the target giving ENXIO; that probe alone: " +
			ms("attach-probe-p50-ms"),
	})
	s.Add(bench.Row{
		Figure: "… its steps: agent's claim → holder pod created → holder container (NRI) → move begun → status Attached",
		Hotgpu: ms("attach-claimed-p50-ms") + " → " + ms("attach-holder-p50-ms") + " → " + ms("attach-nri-p50-ms") + " → " +
			ms("attach-moved-p50-ms") + " → " + ms("attach-attached-p50-ms"),
		Baseline: "waiting for the holder's status Running: " + ms("attach-running-p50-ms"),
		How:      "API watch arrivals, containerd's record of the holder's container, the ledger grant's own time; the holder's Running (kubelet's relist) is no longer waited for",
	})
	s.Add(bench.Row{
		Figure: "GPUAttachment deleted → GPU gone from the container; attachment gone",
		Hotgpu: ms("detach-gone-p50-ms") + "; " + ms("detach-deleted-p50-ms"), Baseline: "—", Target: "p50 < 1 s",
		How: "same benchmark, from the delete call's return: released in the ledger at " + ms("detach-released-p50-ms") +
			", then a probe giving EPERM or ENOENT (the probe alone " + ms("detach-probe-p50-ms") + "); the attachment's deletion on the watch",
	})
}
