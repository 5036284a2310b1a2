package alloc

import (
	"fmt"
	"strconv"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

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
				return nil, fmt.Errorf("GPU %d is held by %s", g.Index, by)
			}
			if !av.Healthy(g.UUID) {
				return nil, fmt.Errorf("GPU %d is unhealthy", g.Index)
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
