package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/integration/cluster"
	"github.com/hotgpu/hotgpu/integration/harness"
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
	defer func() { _ = h.Client().Delete(ctx, "/api/v1/namespaces/team-a/pods/ann") }() // testAnnotationQuota deletes it
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

	t.Run("quota", func(t *testing.T) { testAnnotationQuota(t, h) })
	t.Run("charge pod admission", func(t *testing.T) { testChargePodPolicy(t, h) })
}

// testChargePodPolicy: hotgpud's account may create a charge pod only
// labelled with its token's node and in the charge pod's shape; and the API
// server itself refuses spec.nodeName beside a scheduling gate (why the
// charge pod names its node by label and affinity).
func testChargePodPolicy(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	manifest := func(name, extra string) string {
		path := filepath.Join(h.Dir, name+".yaml")
		data := "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: team-b, labels: {hotgpu.dev/node: " + h.NodeName +
			", hotgpu.dev/charge-for: x, hotgpu.dev/charge-container: main}}\nspec:\n  schedulingGates: [{name: hotgpu.dev/charge}]\n" +
			"  automountServiceAccountToken: false\n  containers: [{name: charge, image: " + harness.PauseImage +
			", resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 1}}}]\n" + extra
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	other, own := agentKubeconfig(t, h, "other-node"), agentKubeconfig(t, h, h.NodeName)
	for _, tc := range []struct{ name, kubeconfig, extra, want string }{
		{"other-node", other, "", "charge pods labelled hotgpu.dev/node=other-node"},
		{"with-volume", own, "  volumes: [{name: v, emptyDir: {}}]\n", "only create holder and charge pods"},
		{"own-node", own, "", ""},
		{"gated-with-node", h.AdminKubeconfig, "  nodeName: " + h.NodeName + "\n", "schedulingGates"},
	} {
		out, err := h.Kubectl(ctx, "--kubeconfig", tc.kubeconfig, "create", "-f", manifest("charge-"+tc.name, tc.extra))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v %s", tc.name, err, out)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: creating the pod gave %v, want refused with %q", tc.name, err, tc.want)
		case tc.want != "":
			t.Logf("%s: refused: %v", tc.name, err)
		}
	}
	testAgentPodWrites(t, h, own, other)
}

// testAgentPodWrites: past creation, hotgpud's account deletes only its own
// node's holder and charge pods, and changes only the applied annotations
// of its own node's pods (team-b/other, a user pod on this node, and the
// charge pod charge-own-node are there).
func testAgentPodWrites(t *testing.T, h *hotgpuCluster, own, other string) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, kubeconfig string
		args             []string
		want             string
	}{
		{"another node's agent annotates", other, []string{"annotate", "pod", "other", "gpus.hotgpu.dev/applied.main=0"}, "only change pods on its own node"},
		{"labels a user pod", own, []string{"label", "pod", "other", "x=y"}, "only change a pod's gpus.hotgpu.dev/applied"},
		{"annotates anything else", own, []string{"annotate", "pod", "other", "note=x"}, "only change a pod's gpus.hotgpu.dev/applied"},
		{"deletes a user pod", own, []string{"delete", "pod", "other", "--wait=false"}, "only delete its own node's holder and charge pods"},
		{"another node's agent deletes a charge pod", other, []string{"delete", "pod", "charge-own-node", "--wait=false"}, "only delete"},
		{"writes its applied annotation", own, []string{"annotate", "pod", "other", "gpus.hotgpu.dev/applied.main=0"}, ""},
		{"deletes its charge pod", own, []string{"delete", "pod", "charge-own-node", "--wait=false"}, ""},
	} {
		out, err := h.Kubectl(ctx, append([]string{"--kubeconfig", tc.kubeconfig, "-n", "team-b"}, tc.args...)...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v %s", tc.name, err, out)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: gave %v, want refused with %q", tc.name, err, tc.want)
		}
	}
	if p, err := getPod(t, h.Cluster, "team-b", "other"); err != nil {
		t.Error(err)
	} else if p.Labels["x"] != "" || p.Annotations["note"] != "" || p.Annotations["gpus.hotgpu.dev/applied.main"] != "0" {
		t.Errorf("team-b/other after the writes: labels %v, annotations %v; want only the applied annotation changed", p.Labels, p.Annotations)
	}
	eventually(t, time.Minute, "charge-own-node gone", func() (bool, string) {
		_, err := getPod(t, h.Cluster, "team-b", "charge-own-node")
		return errors.Is(err, cluster.ErrNotFound), fmt.Sprint(err)
	})
}

// testAnnotationQuota: ann's creation-time GPU is charged to team-a's quota
// by a gated charge pod; with a quota of 1, =2 is refused with the quota's
// message and a second pod asking 1 by annotation does not start; deleting
// ann frees the quota (its charge pod goes) and the second pod starts. The
// quota counts CPU and memory too, which the charge pod must say.
func testAnnotationQuota(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	ann, err := getPod(t, h.Cluster, "team-a", "ann")
	if err != nil {
		t.Fatal(err)
	}
	charge := h.chargePod(t, ann)
	t.Logf("charge pod %s: phase %s, gates %v, conditions %v", charge.Name, charge.Status.Phase, charge.Spec.SchedulingGates, charge.Status.Conditions)

	quota := map[string]any{"apiVersion": "v1", "kind": "ResourceQuota",
		"metadata": map[string]any{"name": "gpus", "namespace": "team-a"},
		"spec":     map[string]any{"hard": sizedQuota("1")}}
	if err := h.Client().Create(ctx, "/api/v1/namespaces/team-a/resourcequotas", quota); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Client().Delete(ctx, "/api/v1/namespaces/team-a/resourcequotas/gpus") }()
	h.waitQuotaUsed(t, 1, "ann's charge pod counted")

	h.annotate(t, "team-a", "ann", "2")
	h.waitEvent(t, "team-a", "ann", k8s.ReasonRefused, "exceeded quota")
	if gpus, held := h.visibleGPUs(t, "team-a", "ann"), h.heldBy(t, "team-a", "ann"); len(gpus) != 1 || len(held) != 1 {
		t.Fatalf("after =2 over quota: ann sees GPUs %v, the ledger holds %v; want 1", gpus, held)
	}

	// ann's container restarts under the full quota: it finds its charge
	// pod and gets its GPU again
	h.restartMain(t, ann)
	if gpus, held := h.visibleGPUs(t, "team-a", "ann"), h.heldBy(t, "team-a", "ann"); len(gpus) != 1 || len(held) != 1 {
		t.Fatalf("after a restart: ann sees GPUs %v, the ledger holds %v; want 1", gpus, held)
	}
	if again := h.chargePod(t, ann); again.UID != charge.UID {
		t.Fatalf("the restarted container has charge pod %s, want %s kept", again.UID, charge.UID)
	}

	second := sized(busyboxPod("ann2", 0))
	second.Namespace = "team-a"
	second.Annotations = map[string]string{"gpus.hotgpu.dev/container.main": "1"}
	if err := h.Client().Create(ctx, "/api/v1/namespaces/team-a/pods", second); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Client().Delete(ctx, "/api/v1/namespaces/team-a/pods/ann2") }() // deleted below
	var why string
	eventually(t, time.Minute, "ann2 refused at creation with the quota's message", func() (bool, string) {
		p, err := getPod(t, h.Cluster, "team-a", "ann2")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				why = w.Reason + ": " + w.Message
			}
		}
		return strings.Contains(why, "exceeded quota"), fmt.Sprintf("phase %s, %s", p.Status.Phase, why)
	})
	t.Logf("ann2: %s", why)
	if held := h.heldBy(t, "team-a", "ann2"); len(held) != 0 {
		t.Fatalf("the ledger holds %v for ann2, refused", held)
	}

	deletePod(t, h.Cluster, "team-a", "ann")
	eventually(t, time.Minute, "ann's charge pod gone", func() (bool, string) {
		_, err := getPod(t, h.Cluster, "team-a", charge.Name)
		return errors.Is(err, cluster.ErrNotFound), fmt.Sprint(err)
	})
	// kubelet retries ann2's container, which the quota admits now
	ann2 := waitPodRunning(t, h.Cluster, "team-a", "ann2")
	if gpus := h.visibleGPUs(t, "team-a", "ann2"); len(gpus) != 1 {
		t.Fatalf("ann2 sees GPUs %v once the quota is free, want 1", gpus)
	}
	h.chargePod(t, ann2)
	h.waitQuotaUsed(t, 1, "ann2's charge pod counted, ann's not")

	// a pod that ends (Succeeded) stays, but its charge goes: the agent
	// deletes the charge pod, and the quota is free
	deletePod(t, h.Cluster, "team-a", "ann2")
	h.waitQuotaUsed(t, 0, "ann2's charge gone with it")
	once := sized(busyboxPod("once", 0))
	once.Namespace, once.Spec.RestartPolicy = "team-a", corev1.RestartPolicyNever
	once.Annotations = map[string]string{"gpus.hotgpu.dev/container.main": "1"}
	once.Spec.Containers[0].Command = []string{"sleep", "5"}
	once = createPod(t, h.Cluster, once)
	defer func() { _ = h.Client().Delete(ctx, "/api/v1/namespaces/team-a/pods/once") }()
	onceCharge := h.chargePod(t, once)
	eventually(t, time.Minute, "once Succeeded and its charge pod gone", func() (bool, string) {
		p, err := getPod(t, h.Cluster, "team-a", "once")
		if err != nil {
			return false, err.Error()
		}
		_, err = getPod(t, h.Cluster, "team-a", onceCharge.Name)
		return p.Status.Phase == corev1.PodSucceeded && errors.Is(err, cluster.ErrNotFound), fmt.Sprintf("phase %s, charge pod: %v", p.Status.Phase, err)
	})
	h.waitQuotaUsed(t, 0, "the quota free while once stays (Succeeded)")
}

// restartMain kills p's container main (SIGKILL to its task) and waits
// until kubelet runs it again.
func (h *hotgpuCluster) restartMain(t *testing.T, p *corev1.Pod) {
	t.Helper()
	var id string
	for _, s := range p.Status.ContainerStatuses {
		_, id, _ = strings.Cut(s.ContainerID, "://")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.ctr.Ctr(ctx, "k8s.io", "task", "kill", "-s", "SIGKILL", id); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, p.Name+"'s container restarted", func() (bool, string) {
		now, err := getPod(t, h.Cluster, p.Namespace, p.Name)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range now.Status.ContainerStatuses {
			if s.RestartCount > 0 && s.State.Running != nil {
				return true, ""
			}
		}
		return false, podConditions(now)
	})
}

// chargePod returns the charge pod of p's container main: gated, pending,
// asking 1 GPU, owned by p.
func (h *hotgpuCluster) chargePod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	name := k8s.ChargeName(p.Name, string(p.UID), "main")
	c, err := getPod(t, h.Cluster, p.Namespace, name)
	if err != nil {
		t.Fatalf("no charge pod %s for %s: %v", name, p.Name, err)
	}
	req := c.Spec.Containers[0].Resources.Requests["nvidia.com/gpu"]
	if c.Status.Phase != corev1.PodPending || c.Spec.NodeName != "" || len(c.Spec.SchedulingGates) != 1 ||
		req.Value() != 1 || len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != p.UID {
		t.Fatalf("charge pod %s: phase %s node %q gates %v requests %v owners %v", name, c.Status.Phase, c.Spec.NodeName,
			c.Spec.SchedulingGates, c.Spec.Containers[0].Resources.Requests, c.OwnerReferences)
	}
	return c
}

func (h *hotgpuCluster) waitQuotaUsed(t *testing.T, want int64, why string) {
	t.Helper()
	eventually(t, 2*time.Minute, why, func() (bool, string) {
		var rq corev1.ResourceQuota
		if err := h.Client().Get(context.Background(), "/api/v1/namespaces/team-a/resourcequotas/gpus", &rq); err != nil {
			return false, err.Error()
		}
		used, ok := rq.Status.Used["requests.nvidia.com/gpu"]
		return ok && used.Value() == want, fmt.Sprintf("used %v", rq.Status.Used)
	})
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
