package cdi

import (
	"testing"

	"github.com/hotgpu/hotgpu/internal/nvml"
)

// BenchmarkInventoryAndSpec measures what the daemon does on every GPU
// change: read the inventory of 8 simulated GPUs and build the spec. The
// target is well under 5 ms per operation.
func BenchmarkInventoryAndSpec(b *testing.B) {
	p, err := nvml.New(nvml.WithSimulate("dgxa100"), nvml.WithProcDevices("testdata/proc-devices"))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	for b.Loop() {
		inv, err := p.Inventory()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Generate(inv); err != nil {
			b.Fatal(err)
		}
	}
}
