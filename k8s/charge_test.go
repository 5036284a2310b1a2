package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// chargeEnv is an agent with holder pods on and pod nb (priority "high")
// in its cache.
func chargeEnv(t *testing.T) (*env, *corev1.Pod) {
	t.Helper()
	nb := pod("nb")
	nb.Spec.PriorityClassName = "high"
	nb.Annotations = map[string]string{policy.AnnotationKey("main"): "2"}
	e := newEnv(t, nb)
	e.ag.UseHolders(pause, "")
	if _, err := e.client.CoreV1().Pods("team-a").Create(context.Background(), nb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e, nb
}

// pods are team-a's pods but nb.
func (e *env) pods() []corev1.Pod {
	e.t.Helper()
	l, err := e.client.CoreV1().Pods("team-a").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.Name != "nb" {
			out = append(out, p)
		}
	}
	return out
}

func TestChargePodAsksTheGPUsAndNeverRuns(t *testing.T) {
	e, nb := chargeEnv(t)
	made, err := e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2)
	if err != nil || !made {
		t.Fatalf("Charge = %t, %v", made, err)
	}
	pods := e.pods()
	if len(pods) != 1 {
		t.Fatalf("pods %v, want one charge pod", pods)
	}
	p := pods[0]
	if p.Name != ChargeName("nb", string(nb.UID), "main") || !e.ag.isCharge(&p, string(nb.UID), "main") {
		t.Fatalf("charge pod %s labels %v owners %v", p.Name, p.Labels, p.OwnerReferences)
	}
	if p.Labels[hotgpuv1.NodeLabel] != node || p.Spec.NodeName != "" ||
		len(p.Spec.SchedulingGates) != 1 || p.Spec.SchedulingGates[0].Name != ChargeGate {
		t.Fatalf("node label %q, nodeName %q, gates %v: want gated, labelled with the node, unbound",
			p.Labels[hotgpuv1.NodeLabel], p.Spec.NodeName, p.Spec.SchedulingGates)
	}
	c := p.Spec.Containers
	if len(c) != 1 || c[0].Image != pause || *p.Spec.AutomountServiceAccountToken || len(p.Spec.Volumes) != 0 {
		t.Fatalf("containers %v, token %v, volumes %v", c, *p.Spec.AutomountServiceAccountToken, p.Spec.Volumes)
	}
	req, lim := c[0].Resources.Requests[gpuResource], c[0].Resources.Limits[gpuResource]
	if req.Value() != 2 || lim.Value() != 2 || p.Spec.PriorityClassName != "high" {
		t.Fatalf("requests %v limits %v priority %q; want 2 GPUs at the pod's priority", req, lim, p.Spec.PriorityClassName)
	}
	checkPlaceholderSize(t, c[0].Resources)
	// the container restarted: the same charge, nothing new; also when the
	// quota is full (of this charge), which admission says before the name
	for _, full := range []bool{false, true} {
		if full {
			e.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("exceeded quota: gpu"))
			})
		}
		made, err = e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2)
		if err != nil || made || len(e.pods()) != 1 {
			t.Fatalf("quota full %t: Charge again = %t, %v, pods %d; want the charge pod found", full, made, err, len(e.pods()))
		}
	}
}

func TestChargeRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want string
	}{
		"over quota":      {apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("exceeded quota: gpu")), "exceeded quota: gpu"},
		"API unreachable": {errors.New("dial tcp 10.0.0.1:443: connect: connection refused"), "cannot charge 2 GPU(s)"},
	} {
		t.Run(name, func(t *testing.T) {
			e, nb := chargeEnv(t)
			e.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			made, err := e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2)
			if err == nil || made || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Charge = %t, %v; want an error with %q", made, err, tc.want)
			}
		})
	}
}

func TestChargeNameTakenByAnotherPod(t *testing.T) {
	e, nb := chargeEnv(t)
	name := ChargeName("nb", string(nb.UID), "main")
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", Labels: map[string]string{"app": "mine"}}}
	if _, err := e.client.CoreV1().Pods("team-a").Create(context.Background(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2); err == nil || !strings.Contains(err.Error(), "in the way") {
		t.Fatalf("Charge = %v; want a refusal naming the pod in the way", err)
	}
	if err := e.ag.Uncharge(context.Background(), "team-a", "nb", string(nb.UID), "main"); err != nil {
		t.Fatal(err)
	}
	if p := e.pods(); len(p) != 1 || p[0].Labels["app"] != "mine" {
		t.Fatalf("pods %v: the user's pod must stay as it was", p)
	}
}

func TestNoChargeWithoutHolders(t *testing.T) {
	e, nb := chargeEnv(t)
	e.ag.UseHolders("", "")
	if made, err := e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2); err != nil || made || len(e.pods()) != 0 {
		t.Fatalf("Charge = %t, %v, pods %d; want nothing charged with holderImage empty", made, err, len(e.pods()))
	}
}

// TestChargeGoesWhenTheContainerIsDone: the agent deletes the charge pod
// of a container that ended for good, or of a pod that ended, and keeps
// the one of a container kubelet restarts.
func TestChargeGoesWhenTheContainerIsDone(t *testing.T) {
	exited := func(code int32) []corev1.ContainerStatus {
		return []corev1.ContainerStatus{{Name: "main", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}}
	}
	for name, tc := range map[string]struct {
		restart corev1.RestartPolicy
		phase   corev1.PodPhase
		status  []corev1.ContainerStatus
		gone    bool
	}{
		"pod succeeded":              {corev1.RestartPolicyNever, corev1.PodSucceeded, exited(0), true},
		"pod failed":                 {corev1.RestartPolicyOnFailure, corev1.PodFailed, nil, true},
		"exited, never restarted":    {corev1.RestartPolicyNever, corev1.PodRunning, exited(1), true},
		"succeeded, OnFailure":       {corev1.RestartPolicyOnFailure, corev1.PodRunning, exited(0), true},
		"failed, OnFailure restarts": {corev1.RestartPolicyOnFailure, corev1.PodRunning, exited(1), false},
		"exited, Always restarts":    {corev1.RestartPolicyAlways, corev1.PodRunning, exited(0), false},
		"running":                    {corev1.RestartPolicyNever, corev1.PodRunning, nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			e, nb := chargeEnv(t)
			if _, err := e.ag.Charge(context.Background(), "team-a", "nb", string(nb.UID), "main", 2); err != nil {
				t.Fatal(err)
			}
			nb = nb.DeepCopy()
			nb.Spec.Containers = []corev1.Container{{Name: "main"}}
			nb.Spec.RestartPolicy, nb.Status.Phase, nb.Status.ContainerStatuses = tc.restart, tc.phase, tc.status
			if err := e.ag.podCache.Update(nb); err != nil {
				t.Fatal(err)
			}
			if err := e.ag.adjustPod(context.Background(), podKeyPrefix+"team-a/nb"); err != nil {
				t.Fatal(err)
			}
			if gone := len(e.pods()) == 0; gone != tc.gone {
				t.Fatalf("charge pod gone = %t, want %t", gone, tc.gone)
			}
		})
	}
}
