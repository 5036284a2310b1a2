package integration

import (
	"testing"
)

// TestHotgpuOnCluster deploys hotgpu as users do (image archive, kubectl
// apply -k deploy/ through an overlay, the DaemonSet's pod on simulated
// GPUs) and proves what the scheduler sees. The subtests share the cluster
// and run in order.
func TestHotgpuOnCluster(t *testing.T) {
	h := deployHotgpu(t)

	t.Run("capacity", func(t *testing.T) {
		c, a, err := h.nodeGPUs(t)
		if err != nil || c != 8 || a != 8 {
			t.Fatalf("node nvidia.com/gpu capacity %d allocatable %d (%v), want 8 and 8", c, a, err)
		}
	})
}
