package hooks

import (
	"context"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Recorder records the hook's grants in hotgpud's ledger. *api.Client is
// the real one; when no hotgpud listens its errors say so (see daemonDown),
// and the hook then works standalone.
type Recorder interface {
	HookReserve(ctx context.Context, req api.HookReserveRequest) (*api.HookReservation, error)
	HookRelease(ctx context.Context, containerID string) error
}

// Inventory finds the node's GPUs without hotgpud.
type Inventory interface {
	Inventory() (*gpu.Inventory, error)
}
