package nvml

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// TestMIGProfileNames: names as go-nvlib computes them (the names users
// give to the device plugin, nvidia-ctk and mig-parted).
func TestMIGProfileNames(t *testing.T) {
	const (
		a100_40 = 40960 << 20 // total memory NVML reports, bytes
		a100_80 = 81920 << 20
		h100nvl = 95830 << 20
	)
	tests := []struct {
		name       string
		gi, ci     int
		migMB      uint64
		totalBytes uint64
		want       string
	}{
		{"A100 1g", nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 4864, a100_40, "1g.5gb"},
		{"A100 80GB 1g with media extensions", nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 9728, a100_80, "1g.10gb+me"},
		{"A100 1g with twice the memory", nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 9856, a100_40, "1g.10gb"},
		{"a compute instance smaller than its GPU instance", nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 9856, a100_40, "1c.2g.10gb"},
		{"A100 7g", nvml.GPU_INSTANCE_PROFILE_7_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE, 40192, a100_40, "7g.40gb"},
		{"H100 NVL 1g rounds by eighths, not MiB", nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 11008, h100nvl, "1g.12gb"},
		{"H100 NVL 3g", nvml.GPU_INSTANCE_PROFILE_3_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, 46848, h100nvl, "3g.47gb"},
		{"without media extensions", nvml.GPU_INSTANCE_PROFILE_1_SLICE_NO_ME, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 11008, h100nvl, "1g.12gb-me"},
		{"all media extensions", nvml.GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME, nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, 22016, h100nvl, "2g.24gb+me.all"},
		{"graphics", nvml.GPU_INSTANCE_PROFILE_4_SLICE_GFX, nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, 46848, h100nvl, "4g.47gb+gfx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newMIGProfile(tt.gi, tt.ci, tt.migMB, tt.totalBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := newMIGProfile(nvml.GPU_INSTANCE_PROFILE_COUNT, 0, 1, 1); err == nil {
		t.Error("an unknown GPU instance profile got a name")
	}
}

// TestMIGProfileNamesFromTheDriver: the inventory reads which profiles the
// instances use, so a media-extension instance is told from a plain one of
// the same size.
func TestMIGProfileNamesFromTheDriver(t *testing.T) {
	p := newSimProvider(t, "dgxa100")
	if err := p.Simulation().EnableMIG("1", "1g.5gb+me", "1g.5gb", "1g.10gb"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range inventory(t, p).GPUs[1].MIG {
		got = append(got, m.Profile)
	}
	if want := []string{"1g.5gb+me", "1g.5gb", "1g.10gb"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("profiles = %v, want %v", got, want)
	}
}
