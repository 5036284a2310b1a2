package integration

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

// testAttachNearTarget: the holder pod's GPU is the one best connected to
// the GPU the target already holds (GetPreferredAllocation told by the
// agent), not the lowest free one that plain topology would prefer. On the
// simulated DGX A100 every pair has 12 NVLinks and (6,7) share a PCIe
// switch: with the target on GPU 6 and 0-5 and 7 free, the holder gets 7,
// where plain topology gives 0.
func testAttachNearTarget(t *testing.T, h *hotgpuCluster, k *tenants) {
	createPod(t, h.Cluster, busyboxPod("filler", 6))
	filler := h.heldBy(t, "default", "filler")
	createPod(t, h.Cluster, teamPod("near", 1))
	defer deletePod(t, h.Cluster, "team-a", "near")
	held := h.heldBy(t, "team-a", "near")
	if fmt.Sprint(filler, held) != "[0 1 2 3 4 5] [6]" {
		t.Fatalf("filler holds %v and near %v, want [0..5] and [6]: kubelet's choice changed, so this test must", filler, held)
	}
	deletePod(t, h.Cluster, "default", "filler")
	eventually(t, time.Minute, "filler's GPUs released in the ledger", func() (bool, string) {
		held := h.heldBy(t, "default", "filler")
		return len(held) == 0, fmt.Sprintf("held %v", held)
	})
	out := k.mustHotgpu(t, "attach", "near", "-n", "team-a", "--count", "1", "--wait", "-o", "json")
	var att hotgpuv1.GPUAttachment
	if err := json.Unmarshal([]byte(out), &att); err != nil {
		t.Fatalf("attach -o json: %v\n%s", err, out)
	}
	if len(att.Status.GPUs) != 1 || att.Status.GPUs[0].Index != 7 {
		t.Fatalf("attached %+v, want GPU 7 (GPU 6's PCIe switch peer)", att.Status.GPUs)
	}
	if got := h.heldBy(t, "team-a", "near"); fmt.Sprint(got) != "[6 7]" {
		t.Fatalf("the ledger holds %v for near, want [6 7]", got)
	}
	k.mustHotgpu(t, "detach", "near", "-n", "team-a", "--all", "--wait")
}
