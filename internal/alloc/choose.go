package alloc

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// Why a request cannot be satisfied, for errors.Is (API status codes,
// metrics); the errors themselves name the GPU.
var (
	ErrHeld      = errors.New("GPU is held")
	ErrUnhealthy = errors.New("GPU is unhealthy")
	ErrNotEnough = errors.New("not enough free GPUs")
)

// unavailable is "GPU <index> is <why>", classified by kind.
type unavailable struct {
	index int
	why   string
	kind  error
}

func (e *unavailable) Error() string { return fmt.Sprintf("GPU %d is %s", e.index, e.why) }
func (e *unavailable) Unwrap() error { return e.kind }

// notEnough is "<n> requested, <free> free".
type notEnough struct{ n, free int }

func (e *notEnough) Error() string { return fmt.Sprintf("%d requested, %d free", e.n, e.free) }
func (e *notEnough) Unwrap() error { return ErrNotEnough }

// Availability says which GPUs may be handed out now.
type Availability interface {
	// HeldBy describes the holder of a held GPU ("" when it is free).
	HeldBy(uuid string) string
	Healthy(uuid string) bool
}

// Choose resolves a request: the GPUs named by ids (indices or UUIDs), each
// of which must exist, be free and be healthy, or else count GPUs picked
// among the free healthy ones by Pick. Errors say which GPU and why.
func Choose(inv *gpu.Inventory, av Availability, ids []string, count int) ([]*gpu.GPU, error) {
	if len(ids) > 0 {
		gpus, err := inv.LookupAll(ids)
		if err != nil {
			return nil, err
		}
		for _, g := range gpus {
			if by := av.HeldBy(g.UUID); by != "" {
				return nil, &unavailable{g.Index, "held by " + by, ErrHeld}
			}
			if !av.Healthy(g.UUID) {
				return nil, &unavailable{g.Index, "unhealthy", ErrUnhealthy}
			}
		}
		return gpus, nil
	}
	var free []int
	for _, g := range inv.GPUs {
		if av.HeldBy(g.UUID) == "" && av.Healthy(g.UUID) {
			free = append(free, g.Index)
		}
	}
	picked, err := Pick(inv, free, nil, count)
	if err != nil {
		return nil, err
	}
	out := make([]*gpu.GPU, 0, len(picked))
	for _, idx := range picked {
		g, err := inv.Lookup(strconv.Itoa(idx))
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}
