package nvml

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestEnableMIG(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	sim := p.Simulation()
	if err := sim.EnableMIG(slot(2), "3g.20gb", "2g.10gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	g := inventory(t, p).GPUs[2]
	if !g.MIGEnabled || len(g.MIG) != 3 {
		t.Fatalf("MIG enabled=%v devices=%d, want true and 3", g.MIGEnabled, len(g.MIG))
	}
	want := []struct {
		name, profile string
		mem           uint64
		caps          []int64
	}{
		// driver layout: 3 + minor*135 + gi*9, the CI node right after.
		{"2:0", "3g.20gb", 19968, []int64{273, 274}},
		{"2:1", "2g.10gb", 9856, []int64{282, 283}},
		{"2:2", "1g.5gb", 4864, []int64{291, 292}},
	}
	for i, w := range want {
		m := g.MIG[i]
		var minors []int64
		for _, c := range m.Caps {
			minors = append(minors, c.Minor)
			if c.Major != 236 || c.Path != "/dev/nvidia-caps/nvidia-cap"+strconv.FormatInt(c.Minor, 10) {
				t.Errorf("%s: caps node %+v", w.name, c)
			}
		}
		if m.Name() != w.name || m.Profile != w.profile || m.MemoryMiB != w.mem || m.GI != i || m.CI != 0 || !slices.Equal(minors, w.caps) {
			t.Errorf("MIG %d = %+v (caps %v), want %s %s %d MiB caps %v", i, m, minors, w.name, w.profile, w.mem, w.caps)
		}
		if !strings.HasPrefix(m.UUID, "MIG-") {
			t.Errorf("MIG %d UUID %q", i, m.UUID)
		}
	}
	again := newSimProvider(t, "dgxa100")
	if err := again.Simulation().EnableMIG("2", "3g.20gb"); err != nil {
		t.Fatal(err)
	}
	if u := inventory(t, again).GPUs[2].MIG[0].UUID; u != g.MIG[0].UUID {
		t.Errorf("MIG UUID not stable across providers: %s vs %s", u, g.MIG[0].UUID)
	}
}

func TestEnableMIGErrors(t *testing.T) {
	tests := []struct {
		name     string
		gpu      string
		profiles []string
		want     string
	}{
		{"unknown profile", "0", []string{"5g.1tb"}, "unknown MIG profile"},
		{"too many slices", "0", []string{"7g.40gb", "1g.5gb"}, "slices"},
		{"unknown GPU", "9", []string{"1g.5gb"}, "0-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newSimProvider(t, "dgxa100")
			err := p.Simulation().EnableMIG(tt.gpu, tt.profiles...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDisableMIG(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	sim := p.Simulation()
	if err := sim.EnableMIG("1", "7g.40gb"); err != nil {
		t.Fatal(err)
	}
	if err := sim.DisableMIG("1"); err != nil {
		t.Fatal(err)
	}
	if g := inventory(t, p).GPUs[1]; g.MIGEnabled || len(g.MIG) != 0 {
		t.Fatalf("after DisableMIG: enabled=%v devices=%v", g.MIGEnabled, g.MIG)
	}
}

func TestMIGMinors(t *testing.T) {
	table, err := parseMIGMinors(strings.NewReader("config 1\nmonitor 2\ngpu0/gi0/access 3\ngpu0/gi0/ci0/access 4\ngpu1/gi2/access 156\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		gpu, gi, ci int
		want        int64
	}{
		{0, 0, -1, 3}, {0, 0, 0, 4}, {1, 2, -1, 156},
	}
	for _, tt := range tests {
		t.Run(capKey(tt.gpu, tt.gi, tt.ci), func(t *testing.T) {
			got, ok := table.minor(tt.gpu, tt.gi, tt.ci)
			layout, _ := driverLayoutMinors{}.minor(tt.gpu, tt.gi, tt.ci)
			if !ok || got != tt.want || layout != tt.want {
				t.Fatalf("table=%d,%v layout=%d, want %d", got, ok, layout, tt.want)
			}
		})
	}
	if _, err := parseMIGMinors(strings.NewReader("gpu0/gi0/access x\n")); err == nil {
		t.Error("malformed minor accepted")
	}
}
