//go:build cgo

package main

import (
	"context"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

func init() {
	register(&command{Name: doctorNVMLCommand, Summary: "print NVML's inventory as JSON (hotgpu doctor runs it)", Run: runDoctorNVML, Hidden: true})
}

// readInventory reads NVML in this process: this build has cgo.
func readInventory(_ context.Context, a nvmlArgs) (*gpu.Inventory, error) {
	f := specFlags{simulate: a.simulate, driverRoot: a.driverRoot, devRoot: a.devRoot}
	return f.inventory()
}

// runDoctorNVML serves the cgo-free hotgpu's doctor: the inventory as JSON.
func runDoctorNVML(ctx context.Context, s stdio, args []string) error {
	var a nvmlArgs
	fs := newFlagSet("hotgpu "+doctorNVMLCommand, "Usage:\n  hotgpu "+doctorNVMLCommand+" [flags]\n\nPrint NVML's inventory of this node as JSON, for hotgpu doctor.\n")
	a.register(fs)
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	inv, err := readInventory(ctx, a)
	if err != nil {
		return err
	}
	return printJSON(s.out, inv)
}
