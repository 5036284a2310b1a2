package daemon

import "sync"

// health tracks which GPUs may be handed out. Every GPU starts healthy.
type health struct {
	mu        sync.RWMutex
	unhealthy map[string]string // uuid -> reason
}

func newHealth() *health { return &health{unhealthy: map[string]string{}} }

// Healthy reports whether the GPU may be handed out.
func (h *health) Healthy(uuid string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, bad := h.unhealthy[uuid]
	return !bad
}

// Set marks a GPU unhealthy (reason != "") or healthy again.
func (h *health) Set(uuid, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if reason == "" {
		delete(h.unhealthy, uuid)
		return
	}
	h.unhealthy[uuid] = reason
}

func (h *health) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.unhealthy)
}
