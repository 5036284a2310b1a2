package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// gpuResource is the resource a holder pod asks for.
const gpuResource corev1.ResourceName = "nvidia.com/gpu"

// UseHolders makes the agent carry out attachments through holder pods of
// image (a pause image): each attachment's GPUs are asked for by a pod in
// the attachment's namespace, so that ResourceQuota, the scheduler's and
// kubelet's accounting and preemption all see them, and kubelet's
// allocation is moved into the target container. Empty: attach directly
// (nothing is accounted).
func (ag *Agent) UseHolders(image string, resourceName string) {
	ag.holderImage = image
	if resourceName != "" {
		ag.resource = corev1.ResourceName(resourceName)
	}
}

// holderName is the holder pod of attachment a.
func holderName(a *hotgpuv1.GPUAttachment) string {
	name := "gpuatt-holder-" + a.Name
	if len(name) > 63 { // a pod's hostname is its name, up to 63 characters
		uid := string(a.UID)
		name = strings.TrimRight(name[:63-len(uid)-1], "-.") + "-" + uid
	}
	return name
}

func count(a *hotgpuv1.GPUAttachment) int {
	if a.Spec.Count != nil {
		return int(*a.Spec.Count)
	}
	return len(a.Spec.GPUs)
}

// The CPU and memory a holder or charge pod asks for besides its GPUs, as
// requests and limits alike: a namespace whose ResourceQuota counts CPU or
// memory refuses a pod that does not say how much (unless a LimitRange
// fills in defaults), and an attachment or annotation there would fail for
// want of them. They are what a pause container needs: 10m is the least CPU
// limit kubelet enforces (a 1 ms CFS quota per 100 ms).
var (
	placeholderCPU    = resource.MustParse("10m")
	placeholderMemory = resource.MustParse("16Mi")
)

// placeholderResources asks for n GPUs, and placeholderCPU and
// placeholderMemory.
func (ag *Agent) placeholderResources(n int) corev1.ResourceList {
	return corev1.ResourceList{
		ag.resource:           *resource.NewQuantity(int64(n), resource.DecimalSI),
		corev1.ResourceCPU:    placeholderCPU,
		corev1.ResourceMemory: placeholderMemory,
	}
}

// holderPod is the pod that asks kubelet for a's GPUs, on the target's
// node with the target's priority, owned by a.
func (ag *Agent) holderPod(a *hotgpuv1.GPUAttachment, target *corev1.Pod) *corev1.Pod {
	res := ag.placeholderResources(count(a))
	yes, no := true, false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: holderName(a), Namespace: a.Namespace,
			Annotations: map[string]string{policy.HolderAnnotation: string(a.UID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: hotgpuv1.Kind.GroupVersion().String(),
				Kind: hotgpuv1.Kind.Kind, Name: a.Name, UID: a.UID, Controller: &yes, BlockOwnerDeletion: &yes}},
		},
		Spec: corev1.PodSpec{
			NodeName:                      ag.node,
			PriorityClassName:             target.Spec.PriorityClassName,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			Tolerations:                   target.Spec.Tolerations,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "holder", Image: ag.holderImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{Requests: res, Limits: res},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

// holder returns a's holder pod from the node's cache, or nil.
func (ag *Agent) holder(a *hotgpuv1.GPUAttachment) *corev1.Pod {
	p, err := ag.pods.Pods(a.Namespace).Get(holderName(a))
	if err != nil || p.Annotations[policy.HolderAnnotation] != string(a.UID) {
		return nil
	}
	return p
}

// holderFromAPI asks the API server for a's holder pod: one this agent has
// just created reaches kubelet's watch and this node's cache in either
// order, and kubelet asks for its preferred GPUs as soon as it has it.
func (ag *Agent) holderFromAPI(a *hotgpuv1.GPUAttachment) *corev1.Pod {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p, err := ag.client.CoreV1().Pods(a.Namespace).Get(ctx, holderName(a), metav1.GetOptions{})
	if err != nil || p.Annotations[policy.HolderAnnotation] != string(a.UID) || p.Spec.NodeName != ag.node {
		return nil
	}
	return p
}

// attachByHolder carries out a Pending attachment through its holder pod:
// the pod is created (the API server refuses it over quota: the attachment
// fails with the quota's message), kubelet allocates its GPUs once it runs,
// and they are moved into the target container.
func (ag *Agent) attachByHolder(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod) (time.Duration, error) {
	if gpus := ag.unrecorded(a); len(gpus) > 0 {
		return 0, ag.attached(ctx, a, pod, gpus, "Recovered", "attach finished before a restart")
	}
	if len(a.Spec.GPUs) > 0 {
		msg := "GPUs are asked for by count when attachments are accounted by holder pods (kubelet chooses which): use --count"
		ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", msg)
		return 0, ag.fail(ctx, a, pod, "AttachFailed", msg)
	}
	h := ag.holder(a)
	if h == nil {
		_, err := ag.client.CoreV1().Pods(a.Namespace).Create(ctx, ag.holderPod(a, pod), metav1.CreateOptions{})
		switch {
		case apierrors.IsAlreadyExists(err):
			return retry, nil // ours, not in the cache yet, or someone else's: looked at again
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			msg := "holder pod refused: " + err.Error()
			ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", msg)
			return 0, ag.fail(ctx, a, pod, "HolderRefused", msg)
		case err != nil:
			return 0, fmt.Errorf("failed to create holder pod: %w", err)
		}
		return 0, ag.pending(ctx, a, "waiting for holder pod "+holderName(a))
	}
	if h.DeletionTimestamp != nil || podDone(h) {
		msg := fmt.Sprintf("holder pod %s ended before the attach: %s", h.Name, podWhy(h))
		ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", msg)
		return 0, ag.fail(ctx, a, pod, "HolderGone", msg)
	}
	// kubelet's allocation is the holder's once NRI's CreateContainer has
	// recorded it for the holder's container: it is moved then, not after
	// kubelet's next relist reports the pod Running (up to a second later)
	uuids := ag.holderGPUs(h)
	if len(uuids) != count(a) {
		return 0, ag.pending(ctx, a, "waiting for holder pod "+h.Name+" to run with its GPUs") // ledgerChanged brings a back
	}
	res, err := ag.attacher.Move(target(a), string(h.UID), uuids)
	if err != nil {
		if !podRunning(pod) {
			return retry, ag.pending(ctx, a, err.Error())
		}
		ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", err.Error())
		return 0, ag.fail(ctx, a, pod, "AttachFailed", err.Error())
	}
	var gpus []hotgpuv1.AttachedGPU
	for _, g := range res.GPUs {
		gpus = append(gpus, hotgpuv1.AttachedGPU{Index: g.Index, UUID: g.UUID, Device: g.Node().Path})
	}
	return 0, ag.attached(ctx, a, pod, gpus, "Attached", "attached live (kubelet's allocation of holder pod "+h.Name+")")
}

// holderGPUs returns the GPUs kubelet allocated to holder pod h, as the
// ledger records them once its container claimed them.
func (ag *Agent) holderGPUs(h *corev1.Pod) []string {
	var out []string
	for _, g := range ag.grants.Grants() {
		if g.Reason == ledger.Kubelet && g.Holder.PodUID == string(h.UID) {
			out = append(out, g.GPU)
		}
	}
	slices.Sort(out)
	return out
}

// ledgerChanged queues this node's Pending attachments whose holder pod's
// GPUs the ledger now records (NRI's CreateContainer of the holder): the
// ledger's change, not the pod's next status, starts the move.
func (ag *Agent) ledgerChanged() {
	if ag.holderImage == "" {
		return
	}
	for _, a := range ag.waiting() {
		if h := ag.holder(a); h != nil && len(ag.holderGPUs(h)) == count(a) {
			ag.enqueue(a)
		}
	}
}

// waiting lists this node's attachments that wait for their GPUs: not
// being deleted, phase unset or Pending.
func (ag *Agent) waiting() []*hotgpuv1.GPUAttachment {
	var out []*hotgpuv1.GPUAttachment
	for _, o := range ag.owned.GetIndexer().List() {
		a, err := fromUnstructured(o)
		if err == nil && a.DeletionTimestamp == nil && (a.Status.Phase == "" || a.Status.Phase == hotgpuv1.Pending) {
			out = append(out, a)
		}
	}
	return out
}

// Near returns the GPUs (UUIDs) that the target container already holds of
// this node's one attachment whose holder pod waits for kubelet's
// allocation, when that attachment asks size GPUs: for the device plugin's
// GetPreferredAllocation, whose request names no pod. With one holder
// waiting the asker is that holder (or a pod of the same size arriving at
// the same moment, which then gets a good set anyway); with several, which
// one asks is unknown and nil means plain topology.
func (ag *Agent) Near(size int) []string {
	if ag.holderImage == "" {
		return nil
	}
	var waiting *hotgpuv1.GPUAttachment
	for _, a := range ag.waiting() {
		h := ag.holder(a)
		if h == nil {
			h = ag.holderFromAPI(a)
		}
		if h == nil || h.DeletionTimestamp != nil || podDone(h) || len(ag.holderGPUs(h)) > 0 {
			continue
		}
		if waiting != nil {
			return nil
		}
		waiting = a
	}
	if waiting == nil || count(waiting) != size {
		return nil
	}
	var out []string
	for _, g := range ag.grants.Grants() {
		h := g.Holder
		if h.ContainerID != "" && h.PodNamespace == waiting.Namespace && h.PodName == waiting.Spec.PodName &&
			(waiting.Spec.Container == "" || h.Container == waiting.Spec.Container) {
			out = append(out, g.GPU)
		}
	}
	return out
}

// holderGone ends an Attached attachment whose holder pod went (deleted,
// evicted, preempted): its GPUs are no longer accounted, so they are
// detached (Force: kubelet may give them to another pod now).
func (ag *Agent) holderGone(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod) error {
	h := ag.holder(a)
	why := "deleted"
	if h != nil {
		why = podWhy(h)
	}
	if uuids := ag.stillHeld(a); len(uuids) > 0 {
		if _, err := ag.attacher.Detach(target(a), uuids, true); err != nil && !errors.Is(err, attach.ErrNotFound) {
			return err
		}
	}
	msg := fmt.Sprintf("holder pod %s is gone (%s): GPUs %v detached", holderName(a), why, indexes(a.Status.GPUs))
	ag.event(a, pod, corev1.EventTypeWarning, "HolderGone", msg)
	return ag.setStatus(ctx, a, hotgpuv1.Failed, "HolderGone", msg, nil)
}

// holderEnded reports whether a's holder pod is gone or going.
func (ag *Agent) holderEnded(a *hotgpuv1.GPUAttachment) bool {
	h := ag.holder(a)
	return h == nil || h.DeletionTimestamp != nil || podDone(h)
}

func podWhy(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "deleted"
	case p.Status.Reason != "" || p.Status.Message != "":
		return strings.TrimSpace(p.Status.Reason + " " + p.Status.Message)
	default:
		return string(p.Status.Phase)
	}
}

// deleteHolder deletes a's holder pod (after its GPUs were detached).
func (ag *Agent) deleteHolder(ctx context.Context, a *hotgpuv1.GPUAttachment) error {
	if ag.holderImage == "" {
		return nil
	}
	h := ag.holder(a)
	if h == nil || h.DeletionTimestamp != nil {
		return nil
	}
	err := ag.client.CoreV1().Pods(a.Namespace).Delete(ctx, h.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &h.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// IsHolder reports whether pod namespace/podName is the holder pod of the
// attachment of UID attachmentUID that this agent carries out (for the NRI
// plugin: a pod's own annotation is never proof).
func (ag *Agent) IsHolder(namespace, podName, _, attachmentUID string) bool {
	if ag.holderImage == "" || attachmentUID == "" {
		return false
	}
	objs, _ := ag.owned.GetIndexer().ByIndex(cache.NamespaceIndex, namespace)
	for _, o := range objs {
		a, err := fromUnstructured(o)
		if err == nil && string(a.UID) == attachmentUID && holderName(a) == podName {
			return true
		}
	}
	return false
}

// onHolder brings back the attachment of a holder pod that changed (its
// owner).
func (ag *Agent) onHolder(p *corev1.Pod) {
	if p.Annotations[policy.HolderAnnotation] == "" {
		return
	}
	for _, r := range p.OwnerReferences {
		if r.Kind == hotgpuv1.Kind.Kind && r.APIVersion == hotgpuv1.Kind.GroupVersion().String() {
			ag.queue.Add(p.Namespace + "/" + r.Name)
		}
	}
}
