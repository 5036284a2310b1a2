//go:build !cgo

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// readInventory reads NVML through hotgpu-cdi, the cgo build: this one
// cannot load NVML.
func readInventory(ctx context.Context, a nvmlArgs) (*gpu.Inventory, error) {
	out, err := helperOutput(ctx, findSelf(), exec.LookPath, append([]string{doctorNVMLCommand}, a.args()...))
	if err != nil {
		return nil, err
	}
	var inv gpu.Inventory
	if err := json.Unmarshal(out, &inv); err != nil {
		return nil, fmt.Errorf("failed to read %s's inventory: %w", cdiHelperName, err)
	}
	return &inv, nil
}
