package deviceplugin

import "github.com/hotgpu/hotgpu/internal/gpu"

// Inventory returns the node's GPUs as they are now.
type Inventory interface {
	Inventory() *gpu.Inventory
}

// Health says whether a GPU may be handed out, and wakes subscribers when
// that changes (internal/health.Tracker).
type Health interface {
	Healthy(uuid string) bool
	Subscribe() (<-chan struct{}, func())
}
