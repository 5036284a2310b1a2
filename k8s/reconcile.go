package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// retry is how soon an attachment waiting on something outside the API
// (a container starting, a process letting go of a GPU) is looked at again.
const retry = 2 * time.Second

// reconcile brings one attachment to its goal: attached while it exists
// and its pod runs here, detached (and its finalizer gone) once deleted. It
// returns how soon to look again, if it is waiting for something.
func (ag *Agent) reconcile(ctx context.Context, key string) (time.Duration, error) {
	a, err := ag.get(key)
	if a == nil || err != nil {
		return 0, err
	}
	pod, err := ag.pods.Pods(a.Namespace).Get(a.Spec.PodName)
	if apierrors.IsNotFound(err) {
		pod, err = nil, nil
	}
	if err != nil {
		return 0, err
	}
	if a.Labels[hotgpuv1.NodeLabel] != ag.node {
		if pod == nil || a.DeletionTimestamp != nil {
			return 0, nil // another node's, its pod is not scheduled yet, or never claimed
		}
		return 0, ag.claim(ctx, a, pod)
	}
	if a.DeletionTimestamp != nil {
		return ag.detach(ctx, a, pod)
	}
	if pod == nil && a.Status.Phase != hotgpuv1.Attached {
		// not in this node's pod cache (yet): the pod's own event brings
		// the attachment back here, so nothing polls
		return 0, ag.pending(ctx, a, fmt.Sprintf("waiting for pod %s on node %s", a.Spec.PodName, ag.node))
	}
	if pod == nil || pod.DeletionTimestamp != nil || podDone(pod) {
		if a.Status.Phase == hotgpuv1.Attached {
			// its GPUs end with the pod's container; the garbage collector
			// deletes the attachment with its owner
			return 0, nil
		}
		return 0, ag.fail(ctx, a, nil, "PodGone", fmt.Sprintf("pod %s is not running on node %s", a.Spec.PodName, ag.node))
	}
	if !slices.Contains(a.Finalizers, hotgpuv1.Finalizer) || !ownedBy(a, pod) {
		return 0, ag.claim(ctx, a, pod)
	}
	switch a.Status.Phase {
	case hotgpuv1.Failed:
		// a holder left behind (the move failed) gives its GPUs back
		return 0, ag.deleteHolder(ctx, a)
	case hotgpuv1.Attached:
		if ag.holderImage != "" && ag.holderEnded(a) {
			return 0, ag.holderGone(ctx, a, pod)
		}
		if len(ag.stillHeld(a)) > 0 || !podRunning(pod) {
			return 0, nil
		}
		// the container restarted (its live grants ended with the old one):
		// attach again to the new one
		ag.event(a, pod, corev1.EventTypeNormal, "Reattaching", "the container restarted; attaching again")
		return 0, ag.setStatus(ctx, a, hotgpuv1.Pending, "Reattaching", "the container restarted; attaching again", nil)
	}
	if msg := badContainer(a, pod); msg != "" {
		ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", msg)
		return 0, ag.fail(ctx, a, pod, "AttachFailed", msg)
	}
	if ag.holderImage != "" {
		return ag.attachByHolder(ctx, a, pod)
	}
	return ag.attach(ctx, a, pod)
}

// badContainer says why the attachment's container cannot be the target
// in this pod, or "".
func badContainer(a *hotgpuv1.GPUAttachment, pod *corev1.Pod) string {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	switch {
	case a.Spec.Container != "" && !slices.Contains(names, a.Spec.Container):
		return fmt.Sprintf("pod %s has no container %q (it has %v)", pod.Name, a.Spec.Container, names)
	case a.Spec.Container == "" && len(names) > 1:
		return fmt.Sprintf("pod %s has %d containers %v: name one in spec.container (kubectl hotgpu attach -c)", pod.Name, len(names), names)
	}
	return ""
}

// get returns the attachment of key from either watch, or nil if gone.
func (ag *Agent) get(key string) (*hotgpuv1.GPUAttachment, error) {
	for _, inf := range []cache.SharedIndexInformer{ag.owned, ag.unowned} {
		obj, ok, err := inf.GetIndexer().GetByKey(key)
		if err != nil {
			return nil, err
		}
		if ok {
			return fromUnstructured(obj)
		}
	}
	return nil, nil
}

func podDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func ownedBy(a *hotgpuv1.GPUAttachment, p *corev1.Pod) bool {
	return slices.ContainsFunc(a.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == p.UID })
}

// claim labels an attachment of a pod on this node with the node, adds the
// finalizer that keeps it until its GPUs are detached, and makes the pod
// its owner, so that deleting the pod deletes it.
func (ag *Agent) claim(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod) error {
	a = a.DeepCopy()
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	a.Labels[hotgpuv1.NodeLabel] = ag.node
	if !slices.Contains(a.Finalizers, hotgpuv1.Finalizer) {
		a.Finalizers = append(a.Finalizers, hotgpuv1.Finalizer)
	}
	if !ownedBy(a, pod) {
		a.OwnerReferences = append(a.OwnerReferences, metav1.OwnerReference{
			APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID})
	}
	u, err := toUnstructured(a)
	if err != nil {
		return err
	}
	_, err = ag.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("failed to claim attachment %s/%s: %w", a.Namespace, a.Name, err)
	}
	return nil // the update comes back through the watch
}

func target(a *hotgpuv1.GPUAttachment) attach.Target {
	return attach.Target{PodNamespace: a.Namespace, PodName: a.Spec.PodName, ContainerName: a.Spec.Container}
}

// attach carries out a Pending attachment. A grant the ledger already holds
// for it (hotgpud stopped after the attach, before the status was written)
// is taken up instead of attaching again.
func (ag *Agent) attach(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod) (time.Duration, error) {
	if gpus := ag.unrecorded(a); len(gpus) > 0 {
		return 0, ag.attached(ctx, a, pod, gpus, "Recovered", "attach finished before a restart")
	}
	count := 0
	if a.Spec.Count != nil {
		count = int(*a.Spec.Count)
	}
	res, err := ag.attacher.Attach(target(a), a.Spec.GPUs, count)
	switch {
	case errors.Is(err, attach.ErrNotFound) || (err != nil && !podRunning(pod)):
		return retry, ag.pending(ctx, a, err.Error())
	case err != nil:
		ag.event(a, pod, corev1.EventTypeWarning, "AttachFailed", err.Error())
		if fromAnnotation(a) {
			ag.recorder.Eventf(pod, corev1.EventTypeWarning, ReasonRefused, "container %s: %s", a.Spec.Container, err)
		}
		return 0, ag.fail(ctx, a, pod, "AttachFailed", err.Error())
	}
	var gpus []hotgpuv1.AttachedGPU
	for _, g := range res.GPUs {
		gpus = append(gpus, hotgpuv1.AttachedGPU{Index: g.Index, UUID: g.UUID, Device: g.Node().Path})
	}
	return 0, ag.attached(ctx, a, pod, gpus, "Attached", "attached live")
}

func podRunning(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

// unrecorded returns the GPUs the ledger holds for the attachment's
// container by live attach that no attachment's status records: an attach
// that completed just before hotgpud stopped.
func (ag *Agent) unrecorded(a *hotgpuv1.GPUAttachment) []hotgpuv1.AttachedGPU {
	want := len(a.Spec.GPUs)
	if a.Spec.Count != nil {
		want = int(*a.Spec.Count)
	}
	recorded := map[string]bool{}
	objs, _ := ag.owned.GetIndexer().ByIndex(byPod, a.Namespace+"/"+a.Spec.PodName)
	for _, o := range objs {
		if other, err := fromUnstructured(o); err == nil {
			for _, g := range other.Status.GPUs {
				recorded[g.UUID] = true
			}
		}
	}
	var out []hotgpuv1.AttachedGPU
	for _, g := range ag.grants.Grants() {
		h := g.Holder
		if g.Reason == ledger.Attach && g.State == ledger.Active && !recorded[g.GPU] &&
			h.PodNamespace == a.Namespace && h.PodName == a.Spec.PodName &&
			(a.Spec.Container == "" || a.Spec.Container == h.Container) {
			if p, ok := ag.inv.Inventory().ByUUID(g.GPU); ok {
				out = append(out, hotgpuv1.AttachedGPU{Index: p.Index, UUID: p.UUID, Device: p.Node().Path})
			}
		}
	}
	if len(out) != want {
		return nil // not this attachment's (or the CLI's): attach as asked
	}
	return out
}

// detach ends a deleted attachment: its GPUs are detached (Graceful: not
// while a process holds one) and the finalizer removed.
func (ag *Agent) detach(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod) (time.Duration, error) {
	if !slices.Contains(a.Finalizers, hotgpuv1.Finalizer) {
		return 0, nil
	}
	uuids := ag.stillHeld(a)
	if len(uuids) > 0 && pod != nil {
		force := a.Spec.DetachPolicy == hotgpuv1.Force
		_, err := ag.attacher.Detach(target(a), uuids, force)
		switch {
		case errors.Is(err, attach.ErrBusy):
			ag.event(a, pod, corev1.EventTypeWarning, "DetachBusy", err.Error())
			if fromAnnotation(a) {
				ag.recorder.Eventf(pod, corev1.EventTypeWarning, ReasonRefused,
					"container %s: %s; the GPU stays until it is free", a.Spec.Container, err)
			}
			msg := err.Error() + " (detachPolicy Graceful: set it to Force to detach anyway)"
			return retry, ag.setStatus(ctx, a, hotgpuv1.Detaching, "Busy", msg, a.Status.GPUs)
		case errors.Is(err, attach.ErrNotFound):
			// the container is gone: its grants end with it
		case err != nil:
			return 0, err
		default:
			ag.event(a, pod, corev1.EventTypeNormal, "Detached", fmt.Sprintf("detached GPUs %v", indexes(a.Status.GPUs)))
			if fromAnnotation(a) {
				ag.recorder.Eventf(pod, corev1.EventTypeNormal, ReasonDetached,
					"container %s: detached GPUs %v (annotation %s)", a.Spec.Container, indexes(a.Status.GPUs), a.Annotations[ValueAnnotation])
			}
		}
	}
	// detached first, then the holder goes: kubelet may give its GPUs to
	// another pod only once the target has let go of them
	if err := ag.deleteHolder(ctx, a); err != nil {
		return 0, fmt.Errorf("failed to delete holder pod: %w", err)
	}
	return 0, ag.dropFinalizer(ctx, a)
}

// stillHeld returns the attachment's GPUs the ledger still grants to its
// pod by live attach: hotgpud may have stopped after detaching them, before
// the finalizer was removed.
func (ag *Agent) stillHeld(a *hotgpuv1.GPUAttachment) []string {
	var out []string
	for _, g := range a.Status.GPUs {
		if gr, ok := ledgerGrant(ag.grants, g.UUID); ok && gr.Reason == ledger.Attach &&
			gr.Holder.PodNamespace == a.Namespace && gr.Holder.PodName == a.Spec.PodName {
			out = append(out, g.UUID)
		}
	}
	return out
}

func ledgerGrant(g Grants, uuid string) (ledger.Grant, bool) {
	for _, gr := range g.Grants() {
		if gr.GPU == uuid {
			return gr, true
		}
	}
	return ledger.Grant{}, false
}

func (ag *Agent) dropFinalizer(ctx context.Context, a *hotgpuv1.GPUAttachment) error {
	a = a.DeepCopy()
	a.Finalizers = slices.DeleteFunc(a.Finalizers, func(f string) bool { return f == hotgpuv1.Finalizer })
	u, err := toUnstructured(a)
	if err != nil {
		return err
	}
	_, err = ag.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func indexes(gpus []hotgpuv1.AttachedGPU) []int {
	out := make([]int, 0, len(gpus))
	for _, g := range gpus {
		out = append(out, g.Index)
	}
	return out
}

func (ag *Agent) attached(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod, gpus []hotgpuv1.AttachedGPU, reason, msg string) error {
	msg = fmt.Sprintf("%s: GPUs %v", msg, indexes(gpus))
	ag.event(a, pod, corev1.EventTypeNormal, reason, msg)
	if fromAnnotation(a) && pod != nil {
		ag.recorder.Eventf(pod, corev1.EventTypeNormal, ReasonAttached,
			"container %s: attached GPUs %v (annotation %s)", a.Spec.Container, indexes(gpus), a.Annotations[ValueAnnotation])
	}
	return ag.setStatus(ctx, a, hotgpuv1.Attached, reason, msg, gpus)
}

func (ag *Agent) pending(ctx context.Context, a *hotgpuv1.GPUAttachment, msg string) error {
	if a.Status.Phase == hotgpuv1.Pending && a.Status.Message == msg {
		return nil
	}
	return ag.setStatus(ctx, a, hotgpuv1.Pending, "Waiting", msg, nil)
}

// fail ends an attachment that cannot be carried out. Nothing was attached
// (a failed attach leaves the container and the ledger as before).
func (ag *Agent) fail(ctx context.Context, a *hotgpuv1.GPUAttachment, pod *corev1.Pod, reason, msg string) error {
	if a.Status.Phase == hotgpuv1.Failed && a.Status.Message == msg {
		return nil
	}
	if pod == nil {
		ag.event(a, nil, corev1.EventTypeWarning, reason, msg)
	}
	return ag.setStatus(ctx, a, hotgpuv1.Failed, reason, msg, nil)
}

// setStatus writes a's status. The agent is the only writer of an
// attachment's status, so a conflict means the cache has not caught up with
// its own last write (a move right after the Pending status): while the
// API's copy is still unsettled (Pending or no phase) the status is written
// onto it at once instead of after a rate-limited retry. A settled copy
// means this decision was made on a view older than that outcome: the
// conflict stands, and the retry decides again on the cache.
func (ag *Agent) setStatus(ctx context.Context, a *hotgpuv1.GPUAttachment, phase hotgpuv1.Phase, reason, msg string, gpus []hotgpuv1.AttachedGPU) error {
	err := ag.writeStatus(ctx, a, phase, reason, msg, gpus)
	if !apierrors.IsConflict(err) {
		return err
	}
	u, gerr := ag.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).Get(ctx, a.Name, metav1.GetOptions{})
	if gerr != nil {
		return err
	}
	fresh, ferr := fromUnstructured(u)
	if ferr != nil || fresh.UID != a.UID || fresh.Status.Phase != "" && fresh.Status.Phase != hotgpuv1.Pending {
		return err
	}
	return ag.writeStatus(ctx, fresh, phase, reason, msg, gpus)
}

func (ag *Agent) writeStatus(ctx context.Context, a *hotgpuv1.GPUAttachment, phase hotgpuv1.Phase, reason, msg string, gpus []hotgpuv1.AttachedGPU) error {
	a = a.DeepCopy()
	a.Status.Phase, a.Status.Message, a.Status.NodeName = phase, msg, ag.node
	a.Status.GPUs = gpus
	a.Status.ObservedGeneration = a.Generation
	status := metav1.ConditionFalse
	if phase == hotgpuv1.Attached {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: string(hotgpuv1.Attached),
		Status: status, Reason: reason, Message: msg, ObservedGeneration: a.Generation})
	u, err := toUnstructured(a)
	if err != nil {
		return err
	}
	_, err = ag.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("failed to write the status of %s/%s: %w", a.Namespace, a.Name, err)
	}
	return nil
}

// event records an outcome on the attachment and, when given, its pod.
func (ag *Agent) event(a *hotgpuv1.GPUAttachment, pod *corev1.Pod, kind, reason, msg string) {
	ref := a.DeepCopy()
	ref.SetGroupVersionKind(hotgpuv1.Kind)
	ag.recorder.Event(ref, kind, reason, msg)
	if pod != nil {
		ag.recorder.Eventf(pod, kind, reason, "GPUAttachment %s: %s", a.Name, msg)
	}
}
