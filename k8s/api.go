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

// subscriber is a Grants that tells of its changes (internal/ledger.Ledger):
// a holder pod's GPUs recorded by NRI start the move at once.
type subscriber interface {
	Subscribe() (<-chan struct{}, func())
}

// Inventory is the node's GPUs (internal/daemon.Daemon), to describe a
// grant found in the ledger.
type Inventory interface{ Inventory() *gpu.Inventory }
