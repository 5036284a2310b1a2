package k8s

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

// The GPUs a container gets at creation by its pod's annotation are in no
// pod's requests, so ResourceQuota would not count them. A charge pod asks
// for them instead: a pod in the pod's namespace, owned by it (deleted with
// it), whose scheduling gate keeps it from ever being scheduled, run or
// given a device. ResourceQuota counts the requests of every non-terminal
// pod, scheduled or not; the scheduler and kubelet never see it (the GPUs
// are the annotation's already, withdrawn from kubelet by the ledger).
const (
	// ChargeGate is the charge pod's scheduling gate; nothing removes it.
	ChargeGate = "hotgpu.dev/charge"
	// ChargeForLabel on a charge pod is the UID of the pod it charges for.
	ChargeForLabel = "hotgpu.dev/charge-for"
	// ChargeContainerLabel on a charge pod is the container it charges for.
	ChargeContainerLabel = "hotgpu.dev/charge-container"
	// ChargeTimeout bounds the API call made while containerd waits for
	// the NRI plugin (its plugin_request_timeout is 2 s by default).
	ChargeTimeout = time.Second
)

// ChargeName is the charge pod of a container of pod podUID: unique per
// pod (a pod re-created with the same name is another pod) and per
// container, readable in `kubectl get pods`.
func ChargeName(podName, podUID, container string) string {
	suffix := "-" + container + "-gpucharge-" + shortUID(podUID)
	if len(podName)+len(suffix) > 253 {
		podName = strings.TrimRight(podName[:253-len(suffix)], "-.")
	}
	return podName + suffix
}

func shortUID(uid string) string {
	if len(uid) > 8 {
		return uid[:8]
	}
	return uid
}

// chargePod is the pod that charges n GPUs of container to the quota of
// its pod's namespace.
func (ag *Agent) chargePod(ns, podName, podUID, container string, n int) *corev1.Pod {
	res := ag.placeholderResources(n)
	yes, no := true, false
	nobody := int64(65535)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: ChargeName(podName, podUID, container), Namespace: ns,
			Labels:          map[string]string{hotgpuv1.NodeLabel: ag.node, ChargeForLabel: podUID, ChargeContainerLabel: container},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: podName, UID: types.UID(podUID)}},
		},
		Spec: corev1.PodSpec{
			// the API refuses spec.nodeName beside a scheduling gate: the
			// node is named by affinity, which says where the GPUs are
			SchedulingGates: []corev1.PodSchedulingGate{{Name: ChargeGate}},
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{ag.node}}},
				}}},
			}},
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "charge", Image: ag.holderImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{Requests: res, Limits: res},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					RunAsNonRoot: &yes, RunAsUser: &nobody, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
	// a quota scoped by priority class counts the charge where it counts
	// the pod
	if pod, err := ag.pods.Pods(ns).Get(podName); err == nil && string(pod.UID) == podUID {
		p.Spec.PriorityClassName = pod.Spec.PriorityClassName
	}
	return p
}

// isCharge reports whether p is the charge pod of container of pod podUID
// that this node's agent made: labelled so, gated, owned by the pod.
func (ag *Agent) isCharge(p *corev1.Pod, podUID, container string) bool {
	if p.Labels[ChargeForLabel] != podUID || p.Labels[ChargeContainerLabel] != container ||
		p.Labels[hotgpuv1.NodeLabel] != ag.node ||
		!slices.ContainsFunc(p.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == ChargeGate }) {
		return false
	}
	for _, r := range p.OwnerReferences {
		if r.Kind == "Pod" && r.APIVersion == "v1" && string(r.UID) == podUID {
			return true
		}
	}
	return false
}

func chargedGPUs(p *corev1.Pod, name corev1.ResourceName) int64 {
	var n int64
	for _, c := range p.Spec.Containers {
		q := c.Resources.Requests[name]
		n += q.Value()
	}
	return n
}

// Charge charges n GPUs that container of pod namespace/podName (UID
// podUID) gets by annotation at creation to its namespace's quota, through
// its charge pod, and reports whether it created the charge pod now. A
// restarted container finds its charge pod there. The API server's refusal
// (over quota: "exceeded quota: ...") is returned, and so is its silence:
// without the API server the quota is unknown, and hotgpud gives no GPU it
// cannot charge. With holder pods off (UseHolders("")) nothing is charged.
func (ag *Agent) Charge(ctx context.Context, ns, podName, podUID, container string, n int) (bool, error) {
	if ag.holderImage == "" || n <= 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, ChargeTimeout)
	defer cancel()
	want := ag.chargePod(ns, podName, podUID, container, n)
	_, err := ag.client.CoreV1().Pods(ns).Create(ctx, want, metav1.CreateOptions{})
	switch {
	case err == nil:
		ag.log.WithFields(map[string]any{"pod": ns + "/" + podName, "container": container, "gpus": n, "charge_pod": want.Name}).
			Info("annotation GPUs charged to the namespace's quota")
		return true, nil
	case apierrors.IsAlreadyExists(err):
		return false, ag.chargedAlready(ctx, want, podUID, container, n)
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		// quota admission runs before the name is looked at: a restarted
		// container under a full quota (full of its own charge) is refused
		// so even though its charge pod is there
		if ag.chargedAlready(ctx, want, podUID, container, n) == nil {
			return false, nil
		}
		return false, fmt.Errorf("%d GPU(s) not charged to namespace %s: %w", n, ns, err)
	default:
		return false, fmt.Errorf("cannot charge %d GPU(s) to namespace %s's quota, so none is given "+
			"(hotgpud gives annotation GPUs only when the API server accounts for them; retried when the container is): %w", n, ns, err)
	}
}

// chargedAlready checks the charge pod found under want's name: the one of
// this container (restarted), asking at least n GPUs.
func (ag *Agent) chargedAlready(ctx context.Context, want *corev1.Pod, podUID, container string, n int) error {
	have, err := ag.client.CoreV1().Pods(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cannot read charge pod %s/%s, so no GPU is given: %w", want.Namespace, want.Name, err)
	}
	if !ag.isCharge(have, podUID, container) || have.DeletionTimestamp != nil {
		return fmt.Errorf("pod %s/%s is in the way of the charge pod of container %s (not its charge pod, or being deleted): "+
			"delete it; no GPU is given until then", want.Namespace, want.Name, container)
	}
	if got := chargedGPUs(have, ag.resource); got < int64(n) {
		return fmt.Errorf("charge pod %s/%s asks %d GPU(s), the container %d: delete the pod to start it again", want.Namespace, want.Name, got, n)
	}
	return nil
}

// Uncharge deletes the charge pod of container of pod podUID, if it is
// there and is one.
func (ag *Agent) Uncharge(ctx context.Context, ns, podName, podUID, container string) error {
	if ag.holderImage == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ChargeTimeout)
	defer cancel()
	name := ChargeName(podName, podUID, container)
	have, err := ag.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to read charge pod %s/%s: %w", ns, name, err)
	}
	if !ag.isCharge(have, podUID, container) {
		return nil // not ours: left alone
	}
	err = ag.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &have.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("failed to delete charge pod %s/%s: %w", ns, name, err)
	}
	ag.log.WithFields(map[string]any{"pod": ns + "/" + podName, "container": container, "charge_pod": name}).
		Info("annotation GPUs no longer charged: the container is done")
	return nil
}

// unchargeDone deletes the charge pods of the containers of pod that are
// done for good (the pod ended, or the container ended and is not
// restarted): the ledger released their GPUs, and a terminal pod leaves
// quota but its charge pod, never terminal, would not. The garbage
// collector deletes the rest with the pod.
func (ag *Agent) unchargeDone(ctx context.Context, pod *corev1.Pod) error {
	if ag.holderImage == "" || !hasGPUAnnotation(pod) {
		return nil
	}
	var done []string
	for _, c := range pod.Spec.InitContainers {
		if podDone(pod) || containerDone(pod, c, pod.Status.InitContainerStatuses, true) {
			done = append(done, c.Name)
		}
	}
	for _, c := range pod.Spec.Containers {
		if podDone(pod) || containerDone(pod, c, pod.Status.ContainerStatuses, false) {
			done = append(done, c.Name)
		}
	}
	for _, c := range done {
		key := string(pod.UID) + "/" + c
		ag.mu.Lock()
		said := ag.uncharged[key]
		ag.mu.Unlock()
		if said {
			continue
		}
		if err := ag.Uncharge(ctx, pod.Namespace, pod.Name, string(pod.UID), c); err != nil {
			return err
		}
		ag.mu.Lock()
		if ag.uncharged == nil {
			ag.uncharged = map[string]bool{}
		}
		ag.uncharged[key] = true
		ag.mu.Unlock()
	}
	return nil
}

// hasGPUAnnotation reports whether the pod carries any of hotgpu's GPU
// annotations: only such a pod can have a charge pod.
func hasGPUAnnotation(pod *corev1.Pod) bool {
	for k := range pod.Annotations {
		if strings.HasPrefix(k, "gpus.hotgpu.dev/") {
			return true
		}
	}
	return false
}

// containerDone reports whether container c ended and kubelet will not
// start it again.
func containerDone(pod *corev1.Pod, c corev1.Container, statuses []corev1.ContainerStatus, init bool) bool {
	for _, s := range statuses {
		if s.Name != c.Name || s.State.Terminated == nil {
			continue
		}
		ok := s.State.Terminated.ExitCode == 0
		switch {
		case init && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways:
			return false // a sidecar runs as long as the pod
		case init:
			return ok || pod.Spec.RestartPolicy == corev1.RestartPolicyNever
		case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
			return true
		case pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure:
			return ok
		}
	}
	return false
}
