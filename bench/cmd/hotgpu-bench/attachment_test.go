package main

import (
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/bench"
)

func TestAttachmentRows(t *testing.T) {
	s := &bench.Section{}
	attachmentRows(bench.GoBenches{}, s)
	if len(s.Rows) != 0 {
		t.Fatalf("rows without the benchmark: %+v", s.Rows)
	}
	m := map[string][]float64{}
	for unit, v := range map[string]float64{"attach-usable-p50-ms": 248, "attach-probe-p50-ms": 72, "attach-claimed-p50-ms": 6,
		"attach-holder-p50-ms": 12, "attach-nri-p50-ms": 157, "attach-moved-p50-ms": 157, "attach-attached-p50-ms": 169,
		"attach-running-p50-ms": 864, "detach-released-p50-ms": 31, "detach-gone-p50-ms": 115, "detach-deleted-p50-ms": 52,
		"detach-probe-p50-ms": 83} {
		m[unit] = []float64{v}
	}
	attachmentRows(bench.GoBenches{"integration.BenchmarkGPUAttachment": {Metrics: m}}, s)
	if len(s.Rows) != 3 {
		t.Fatalf("rows %+v, want 3", s.Rows)
	}
	for i, want := range []string{"248 ms", "6 ms → 12 ms → 157 ms → 157 ms → 169 ms", "115 ms; 52 ms"} {
		if s.Rows[i].Hotgpu != want {
			t.Errorf("row %d (%s): %q, want %q", i, s.Rows[i].Figure, s.Rows[i].Hotgpu, want)
		}
	}
	if !strings.Contains(s.Rows[0].How, "72 ms") || !strings.Contains(s.Rows[1].Baseline, "864 ms") {
		t.Errorf("the probe's cost or the holder's Running is missing: %+v", s.Rows[:2])
	}
}
