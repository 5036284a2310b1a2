package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/bench"
)

// goBench is one package's Go benchmarks and the figure they belong to.
type goBench struct {
	pkg, pattern string
	figure       int
}

// unitBenches are the packages whose plain Go benchmarks feed the table.
var unitBenches = []goBench{
	{"./cdi", ".", 3}, {"./internal/hotplug", ".", 2}, {"./internal/alloc", ".", 4},
	{"./plugin", ".", 4}, {"./deviceplugin", ".", 4},
}

// runGoBenches runs each package on its own, so that one that does not
// build costs only its own rows; notes[figure] says why rows are missing.
func runGoBenches(ctx context.Context, repo string, o options, list []goBench, gb bench.GoBenches, notes map[int][]string) {
	for _, p := range list {
		logf("go test -bench %s %s", p.pattern, p.pkg)
		ok, err := gb.Run(ctx, repo, p.pkg, p.pattern, o.goCount, o.benchtime)
		switch {
		case !ok:
			notes[p.figure] = append(notes[p.figure], p.pkg+" is not in this tree, so its benchmarks have no rows")
		case err != nil:
			notes[p.figure] = append(notes[p.figure], "the benchmarks of "+p.pkg+" did not run to the end, so rows may be missing: "+oneLine(err.Error()))
		}
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// addGoRows turns the Go benchmarks into rows of figures 2 to 4.
func addGoRows(gb bench.GoBenches, s2, s3, s4 *bench.Section) {
	addRow(s2, gb.Row("integration.BenchmarkAttachDetach/API", "attach+detach round trip, API (integration benchmark)", "p50 < 10 ms", "another run on its own containerd; ns/op is the mean"))
	addRow(s2, gb.Row("integration.BenchmarkAttachDetach/CLI", "attach+detach round trip, CLI (integration benchmark)", "p50 < 10 ms", "two `hotgpu` process starts per op"))
	addRow(s2, gb.Row("internal/hotplug.BenchmarkAttachDetachV1", "attach+detach mechanics alone, cgroup v1 (in-process)", "", "devices.allow/deny + mknod/unlink on a tmpfs /dev: the floor under the API figure"))
	addRow(s2, gb.Row("internal/hotplug.BenchmarkAttachDetachV2", "attach+detach mechanics alone, cgroup v2 eBPF (in-process)", "", "load and swap a whole device program twice + mknod/unlink"))

	addRow(s3, gb.Row("cdi.BenchmarkInventoryAndSpec", "spec generation in-process (what hotgpud does on every GPU change)", "< 5 ms", "inventory of 8 simulated A100s + spec"))

	anchor := "NVIDIA k8s-device-plugin: 16–30 s reported for 7 of 8 (issue anchor, not measured here)"
	for _, k := range gb.Keys("deviceplugin") {
		name := strings.TrimPrefix(k, "deviceplugin.Benchmark")
		r := gb.Row(k, "device plugin "+name+", 8 GPUs", "", "kubelet's gRPC call on the plugin, in-process")
		if strings.HasPrefix(name, "GetPreferredAllocation") {
			r.Figure, r.Baseline, r.Target = "device plugin "+name+", 7 of 8 GPUs", anchor, "≪ 1 s"
		}
		if name == "Allocate/file" {
			r.How += "; includes persisting the ledger (fsync) before answering"
		}
		s4.Add(*r)
	}
	if r := gb.Row("internal/alloc.BenchmarkPick7of8", "pick 7 of 8 GPUs by NVLink topology", "", "the choice behind a preferred allocation"); r != nil {
		r.Baseline = anchor
		s4.Add(*r)
	}
	addRow(s4, gb.Row("plugin.BenchmarkCreateContainer", "NRI CreateContainer+RemoveContainer in-process, 1,000 containers recorded", "", "annotated container, 1 GPU, ledger fsynced on disk"))
	addRow(s4, gb.Row("plugin.BenchmarkCreateContainerTmpfsLedger", "… same, ledger on tmpfs", "", "the handling without the disk's fsync"))
	addRow(s4, gb.Row("plugin.BenchmarkCreateContainerNoGPU", "NRI CreateContainer in-process, container asking for nothing", "", "the cost every other container pays"))
	addRow(s4, gb.Row("plugin.BenchmarkSynchronize1000", "NRI Synchronize, 1,000 running containers", "", "8 holding GPUs"))
}

// clusterRows is figure 6: integration's benchmarks on a real single-node
// cluster (etcd, API server, scheduler, controller manager, a registered
// kubelet) with hotgpu deployed by its DaemonSet.
func clusterRows(gb bench.GoBenches) *bench.Section {
	s := &bench.Section{Title: "On a real single-node Kubernetes (hotgpu deployed by its DaemonSet)"}
	ms := func(b *bench.GoBench, unit string) string {
		return bench.FormatDuration(time.Duration(b.Median(unit) * float64(time.Millisecond)))
	}
	if b, ok := gb["integration.BenchmarkClusterPodStart"]; ok {
		gpu, plain := b.Median("gpu1-p50-ms"), b.Median("plain-p50-ms")
		s.Add(bench.Row{
			Figure: "pod create → Running, 1 nvidia.com/gpu", Hotgpu: ms(b, "gpu1-p50-ms"),
			Baseline: "no GPU: " + ms(b, "plain-p50-ms"), Ratio: fmt.Sprintf("%.2f×", gpu/plain),
			How: "`BenchmarkClusterPodStart` in integration: pods created through the API server, interleaved with and without a GPU, polled every 10 ms; median per run, median of runs",
		})
	}
	if b, ok := gb["integration.BenchmarkDaemonSetRestart"]; ok {
		s.Add(bench.Row{
			Figure:   "DaemonSet pod re-created → Running → plugin registered → node allocatable 8",
			Hotgpu:   ms(b, "running-p50-ms") + " → " + ms(b, "registered-p50-ms") + " → " + ms(b, "allocatable-p50-ms"),
			Baseline: "—",
			How:      "`BenchmarkDaemonSetRestart` in integration: the hotgpud pod deleted; times from its replacement's creation, polled every 10 ms (registration from kubelet's log)",
		})
	}
	return s
}
