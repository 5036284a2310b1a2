package main

import (
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/bench"
)

// TestDRARows: the DRA benchmarks' figures become rows with same-run ratios,
// and nothing is made up when they did not run.
func TestDRARows(t *testing.T) {
	gb := bench.GoBenches{
		"dra.BenchmarkPrepare/8gpu":           {Pkg: "dra", Name: "BenchmarkPrepare/8gpu", Metrics: map[string][]float64{"ns/op": {2e6}, "p50-ms": {1.5}}},
		"deviceplugin.BenchmarkAllocate/file": {Pkg: "deviceplugin", Name: "BenchmarkAllocate/file", Metrics: map[string][]float64{"ns/op": {5e5}}},
		"integration.BenchmarkClusterDRAPodStart": {Pkg: "integration", Name: "BenchmarkClusterDRAPodStart",
			Metrics: map[string][]float64{"dra1-p50-ms": {990}, "gpu1-p50-ms": {900}, "plain-p50-ms": {880}, "prepare-mean-ms": {1.6}}},
	}
	s4, s6 := &bench.Section{}, &bench.Section{}
	addDRARows(gb, s4, s6)
	if len(s4.Rows) != 1 || s4.Rows[0].Ratio != "4.00×" || !strings.Contains(s4.Rows[0].Baseline, "Allocate/file") {
		t.Errorf("figure 4 rows %+v, want Prepare of 8 beside Allocate/file at 4.00×", s4.Rows)
	}
	if len(s6.Rows) != 2 || !strings.HasPrefix(s6.Rows[0].Ratio, "1.10×") || !strings.Contains(s6.Rows[0].Baseline, "nvidia.com/gpu") ||
		!strings.HasPrefix(s6.Rows[1].Hotgpu, "1.6") {
		t.Errorf("figure 6 rows %+v, want claim -> Running beside nvidia.com/gpu at 1.10×, then Prepare 1.6 ms", s6.Rows)
	}
	s4, s6 = &bench.Section{}, &bench.Section{}
	addDRARows(bench.GoBenches{}, s4, s6)
	if len(s4.Rows)+len(s6.Rows) != 0 {
		t.Errorf("rows without benchmarks: %+v %+v", s4.Rows, s6.Rows)
	}
}
