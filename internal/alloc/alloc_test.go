package alloc

import (
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

func simulated(t testing.TB, preset string) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate(preset))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestPickPCIe8(t *testing.T) {
	inv := simulated(t, "pcie8") // NVLink pairs (0,1) (2,3) (4,5) (6,7); 0-3 and 4-7 share a NUMA node
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	tests := []struct {
		name      string
		available []int
		must      []int
		n         int
		want      []int
	}{
		{"a pair comes whole", all, nil, 2, []int{0, 1}},
		{"must-include pulls its NVLink peer", all, []int{5}, 2, []int{4, 5}},
		{"broken pairs: stay on one NUMA node", []int{0, 2, 5, 7}, nil, 2, []int{0, 2}},
		{"four: two pairs on one node", all, []int{6}, 4, []int{4, 5, 6, 7}},
		{"seven of eight", all, nil, 7, []int{0, 1, 2, 3, 4, 5, 6}},
		{"one", []int{3, 6}, nil, 1, []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Pick(inv, tt.available, tt.must, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Pick = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPickErrors(t *testing.T) {
	inv := simulated(t, "dgxa100")
	for _, tt := range []struct {
		available, must []int
		n               int
		want            string
	}{
		{[]int{0, 1}, nil, 3, "3 requested, 2 free"},
		{[]int{0, 1}, []int{4}, 1, "must be included but is not available"},
		{[]int{0, 1, 2}, []int{0, 1}, 1, "but 2 must be included"},
	} {
		_, err := Pick(inv, tt.available, tt.must, tt.n)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Pick(%v, %v, %d) err = %v, want %q", tt.available, tt.must, tt.n, err, tt.want)
		}
	}
}

func BenchmarkPick7of8(b *testing.B) {
	inv := simulated(b, "pcie8")
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for b.Loop() {
		if _, err := Pick(inv, all, []int{3}, 7); err != nil {
			b.Fatal(err)
		}
	}
}

// A container that already holds GPUs gets the ones best connected to them
// (a GPUAttachment's holder pod), where plain Pick takes the lowest.
func TestPickNear(t *testing.T) {
	tests := []struct {
		preset    string
		name      string
		available []int
		near      []int
		n         int
		plain     []int
		want      []int
	}{
		{"pcie8", "the held GPU's NVLink peer", []int{0, 1, 2, 3, 5, 6, 7}, []int{4}, 1, []int{0}, []int{5}},
		{"pcie8", "a pair on the held pair's NUMA node", []int{0, 1, 2, 3, 6, 7}, []int{4, 5}, 2, []int{0, 1}, []int{6, 7}},
		{"pcie8", "a broken pair: the peer first, then the NUMA node", []int{0, 1, 2, 3, 4, 6, 7}, []int{5}, 3, []int{0, 1, 2}, []int{4, 6, 7}},
		{"dgxa100", "NVSwitch: the held GPU's PCIe switch", []int{0, 1, 2, 3, 4, 5, 7}, []int{6}, 1, []int{0}, []int{7}},
		{"dgxa100", "NVSwitch: the held GPUs' NUMA node", []int{0, 1, 2, 3, 6, 7}, []int{4, 5}, 2, []int{0, 1}, []int{6, 7}},
		{"dgxa100", "nothing held: as Pick", []int{0, 1, 2, 3, 4, 5, 6, 7}, nil, 2, []int{0, 1}, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.preset+"/"+tt.name, func(t *testing.T) {
			inv := simulated(t, tt.preset)
			plain, err := Pick(inv, tt.available, nil, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			got, err := PickNear(inv, tt.available, nil, tt.near, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(plain, tt.plain) || !slices.Equal(got, tt.want) {
				t.Fatalf("Pick = %v, PickNear(held %v) = %v; want %v and %v", plain, tt.near, got, tt.plain, tt.want)
			}
		})
	}
}
