package alloc

import (
	"errors"
	"fmt"
	"slices"
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
	id   string // "3", or "3:1" for a MIG device
	why  string
	kind error
}

func (e *unavailable) Error() string { return fmt.Sprintf("GPU %s is %s", e.id, e.why) }
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

// Choose resolves a request: the GPUs named by ids (indices, UUIDs, MIG
// names "0:1" or MIG UUIDs), each of which must exist, be free and be
// healthy, or else count whole GPUs picked among the free healthy ones by
// Pick. A GPU in MIG mode is never picked whole: its instances are the
// devices (see ChooseMIG). Errors say which GPU and why.
func Choose(inv *gpu.Inventory, av Availability, ids []string, count int) ([]*gpu.GPU, error) {
	if len(ids) > 0 {
		gpus, err := inv.LookupAll(ids)
		if err != nil {
			return nil, err
		}
		for _, g := range gpus {
			if by := av.HeldBy(g.UUID); by != "" {
				return nil, &unavailable{g.ID(), "held by " + by, ErrHeld}
			}
			if !healthy(av, g) {
				return nil, &unavailable{g.ID(), "unhealthy", ErrUnhealthy}
			}
		}
		return gpus, nil
	}
	var free []int
	for _, g := range inv.GPUs {
		if !g.MIGEnabled && av.HeldBy(g.UUID) == "" && av.Healthy(g.UUID) {
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

// ChooseMIG picks count free healthy MIG instances of profile ("1g.5gb"),
// filling the GPUs that already lend instances first so whole GPUs stay
// free for whole-GPU work. The error says how many are free.
func ChooseMIG(inv *gpu.Inventory, av Availability, profile string, count int) ([]*gpu.GPU, error) {
	all := inv.Instances(profile)
	if len(all) == 0 {
		return nil, fmt.Errorf("no MIG device of profile %q on this node (see hotgpu ls)", profile)
	}
	var free []*gpu.GPU
	for _, g := range all {
		if av.HeldBy(g.UUID) == "" && healthy(av, g) {
			free = append(free, g)
		}
	}
	if count > len(free) {
		return nil, &notEnough{count, len(free)}
	}
	lending := map[int]bool{} // parents with an instance held
	for _, g := range all {
		if av.HeldBy(g.UUID) != "" {
			lending[g.Index] = true
		}
	}
	slices.SortStableFunc(free, func(a, b *gpu.GPU) int {
		switch {
		case lending[a.Index] == lending[b.Index]:
			return 0
		case lending[a.Index]:
			return -1
		}
		return 1
	})
	return free[:count], nil
}

// healthy reports whether a device may be handed out: a MIG instance is as
// healthy as its parent (an Xid on the parent is an Xid on its instances).
func healthy(av Availability, g *gpu.GPU) bool {
	return av.Healthy(g.UUID) && (g.ParentUUID == "" || av.Healthy(g.ParentUUID))
}
