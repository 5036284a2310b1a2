package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/k8s"
)

// TestAnnotationAdjust: kubectl annotate --overwrite on a running pod's
// gpus.hotgpu.dev/container.main adds and removes GPUs live, through a
// GPUAttachment hotgpud creates, owned by the pod; bad values and a
// namespace the policy does not list change nothing and say so in an event.
// The overlay allows annotations in team-a only (annotationPolicy).
func TestAnnotationAdjust(t *testing.T) {
	h := deployHotgpu(t)
	ctx := context.Background()
	for _, ns := range []string{"team-a", "team-b"} {
		obj := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if err := h.Client().Create(ctx, "/api/v1/namespaces", obj); err != nil {
			t.Fatal(err)
		}
	}
	p := busyboxPod("ann", 0)
	p.Namespace = "team-a"
	p.Annotations = map[string]string{"gpus.hotgpu.dev/container.main": "1"}
	createPod(t, h.Cluster, p)
	defer deletePod(t, h.Cluster, "team-a", "ann")
	if got := h.visibleGPUs(t, "team-a", "ann"); len(got) != 1 {
		t.Fatalf("ann sees GPUs %v at creation, want 1", got)
	}

	h.annotate(t, "team-a", "ann", "2")
	eventually(t, 30*time.Second, "a second GPU in ann, by an attachment owned by the pod", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		gpus := h.visibleGPUs(t, "team-a", "ann")
		ok := len(gpus) == 2 && len(atts) == 1 && atts[0].Status.Phase == hotgpuv1.Attached &&
			atts[0].Labels[k8s.SourceLabel] == k8s.SourceAnnotation && len(atts[0].OwnerReferences) == 1 &&
			atts[0].OwnerReferences[0].Kind == "Pod" && atts[0].OwnerReferences[0].Name == "ann"
		return ok, fmt.Sprintf("GPUs %v, attachments %s", gpus, attachmentsString(atts))
	})
	h.waitApplied(t, "team-a", "ann", "2")
	h.waitEvent(t, "team-a", "ann", k8s.ReasonAttached, "attached GPUs")

	h.annotate(t, "team-a", "ann", "1")
	eventually(t, 30*time.Second, "ann back to one GPU", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		gpus := h.visibleGPUs(t, "team-a", "ann")
		return len(gpus) == 1 && len(atts) == 0 && len(h.heldBy(t, "team-a", "ann")) == 1,
			fmt.Sprintf("GPUs %v, attachments %s", gpus, attachmentsString(atts))
	})
	h.waitApplied(t, "team-a", "ann", "1")
	h.waitEvent(t, "team-a", "ann", k8s.ReasonDetached, "detached GPUs")

	h.annotate(t, "team-a", "ann", "abc")
	h.waitEvent(t, "team-a", "ann", k8s.ReasonRefused, "not a number")
	if gpus, atts := h.visibleGPUs(t, "team-a", "ann"), attachments(t, h.Cluster, "team-a"); len(gpus) != 1 || len(atts) != 0 {
		t.Fatalf("after =abc: GPUs %v, attachments %s; want 1 GPU and none", gpus, attachmentsString(atts))
	}

	q := busyboxPod("other", 0)
	q.Namespace = "team-b"
	createPod(t, h.Cluster, q)
	defer deletePod(t, h.Cluster, "team-b", "other")
	h.annotate(t, "team-b", "other", "1")
	h.waitEvent(t, "team-b", "other", k8s.ReasonRefused, `namespace "team-b" may not request GPUs by annotation`)
	if gpus, atts := h.visibleGPUs(t, "team-b", "other"), attachments(t, h.Cluster, "team-b"); len(gpus) != 0 || len(atts) != 0 {
		t.Fatalf("in team-b: GPUs %v, attachments %s; want none", gpus, attachmentsString(atts))
	}
	if held := h.heldBy(t, "team-b", "other"); len(held) != 0 {
		t.Fatalf("the ledger holds %v for team-b/other", held)
	}
}

func (h *hotgpuCluster) annotate(t *testing.T, ns, pod, value string) {
	t.Helper()
	if out, err := h.Kubectl(context.Background(), "annotate", "--overwrite", "-n", ns, "pod", pod,
		"gpus.hotgpu.dev/container.main="+value); err != nil {
		t.Fatalf("kubectl annotate =%s: %v\n%s", value, err, out)
	}
}

func (h *hotgpuCluster) waitApplied(t *testing.T, ns, pod, want string) {
	t.Helper()
	eventually(t, 30*time.Second, "applied "+want+" on "+pod, func() (bool, string) {
		p, err := getPod(t, h.Cluster, ns, pod)
		if err != nil {
			return false, err.Error()
		}
		got := p.Annotations[k8s.AppliedPrefix+"main"]
		return got == want, got
	})
}

func (h *hotgpuCluster) waitEvent(t *testing.T, ns, pod, reason, want string) {
	t.Helper()
	eventually(t, 30*time.Second, "event "+reason+" on "+pod, func() (bool, string) {
		out, err := h.Kubectl(context.Background(), "get", "events", "-n", ns, "--field-selector",
			"involvedObject.name="+pod+",reason="+reason, "-o", "jsonpath={.items[*].message}")
		return err == nil && strings.Contains(out, want), out + errString(err)
	})
}
