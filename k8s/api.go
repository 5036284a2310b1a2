package k8s

import (
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Attacher attaches and detaches GPUs (internal/attach.Manager).
type Attacher interface {
	Attach(t attach.Target, ids []string, count int) (*attach.Result, error)
	Detach(t attach.Target, ids []string, force bool) (*attach.Result, error)
	// Move attaches the GPUs kubelet allocated to holder pod holderUID.
	Move(t attach.Target, holderUID string, uuids []string) (*attach.Result, error)
}

// Grants lists the ledger's grants (internal/ledger.Ledger): after a
// restart, an attach that completed before its status was written is found
// there.
type Grants interface {
	Grants() []ledger.Grant
}

// Inventory is the node's GPUs (internal/daemon.Daemon), to describe a
// grant found in the ledger.
type Inventory interface{ Inventory() *gpu.Inventory }
