package daemon

import hhealth "github.com/hotgpu/hotgpu/internal/health"

// health tracks which GPUs may be handed out (internal/health): NVML error
// events and `hotgpu health set` change it, everything that hands out GPUs
// reads it.
type health struct{ *hhealth.Tracker }

func newHealth(opts ...hhealth.Option) *health { return &health{hhealth.New(opts...)} }

func (h *health) count() int { return h.Count() }
