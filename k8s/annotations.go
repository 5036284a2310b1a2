package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// A running pod's gpus.hotgpu.dev/container.<name> annotation is followed
// live: the GPUs the container got at creation stay, and the difference is
// carried by GPUAttachments the agent creates, owned by the pod and
// labelled SourceLabel=SourceAnnotation.
const (
	// SourceLabel says where an attachment comes from.
	SourceLabel = "hotgpu.dev/source"
	// SourceAnnotation is SourceLabel's value on the attachments that
	// carry a pod annotation's change.
	SourceAnnotation = "annotation"
	// ValueAnnotation on such an attachment is the annotation's value it
	// was created for: a failed one is not retried while the value stays.
	ValueAnnotation = "hotgpu.dev/annotation-value"
	// AppliedPrefix, followed by the container name, is the annotation
	// on the pod that says how many GPUs the container holds now.
	AppliedPrefix = "gpus.hotgpu.dev/applied."
)

// Pod events of the annotation's path.
const (
	ReasonAttached = "GPUAttached"
	ReasonDetached = "GPUDetached"
	ReasonRefused  = "GPUAdjustRefused"
)

// podKeyPrefix tells a pod's key from an attachment's in the queue (a
// namespace cannot contain ':').
const podKeyPrefix = "pod:"

// SetAnnotationPolicy sets the namespaces that may ask for GPUs by
// annotation (annotations.namespaces), the same policy as at creation.
func (ag *Agent) SetAnnotationPolicy(p policy.Policy) { ag.policy = p }

func fromAnnotation(a *hotgpuv1.GPUAttachment) bool {
	return a.Labels[SourceLabel] == SourceAnnotation
}

// plan is what converging one container to its annotation takes.
type plan struct {
	add    int                       // GPUs to attach in a new attachment, by count
	addIDs []string                  // or these GPUs (UUIDs)
	remove []*hotgpuv1.GPUAttachment // attachments to delete
	refuse string                    // why not all is done, or ""
}

// attachmentN is how many GPUs an attachment holds or will hold.
func attachmentN(a *hotgpuv1.GPUAttachment) int {
	if a.Status.Phase == hotgpuv1.Attached {
		return len(a.Status.GPUs)
	}
	if a.Spec.Count != nil {
		return int(*a.Spec.Count)
	}
	return len(a.Spec.GPUs)
}

// attachmentUUIDs are the GPUs an attachment holds or will hold, when
// known: a pending count is not.
func attachmentUUIDs(a *hotgpuv1.GPUAttachment) []string {
	if a.Status.Phase == hotgpuv1.Attached {
		var out []string
		for _, g := range a.Status.GPUs {
			out = append(out, g.UUID)
		}
		return out
	}
	if a.Spec.Count != nil {
		return nil
	}
	return a.Spec.GPUs
}

// diff compares what the annotation value asks for (a count, or the GPUs
// want, UUIDs, when it lists them) with what the container holds: created,
// the GPUs from its creation (which stay), and the annotation's
// attachments (oldest first; those being deleted already left out).
func diff(value string, req policy.Request, created []string, atts []*hotgpuv1.GPUAttachment, want []string) plan {
	var p plan
	var live []*hotgpuv1.GPUAttachment
	for _, a := range atts {
		if a.Status.Phase == hotgpuv1.Failed {
			if a.Annotations[ValueAnnotation] == value {
				p.refuse = a.Status.Message
				return p
			}
			p.remove = append(p.remove, a) // failed for an older value
			continue
		}
		live = append(live, a)
	}
	if len(req.IDs) > 0 {
		return diffIDs(p, created, live, want)
	}
	have := len(created)
	for _, a := range live {
		have += attachmentN(a)
	}
	n := req.Count
	if n < len(created) {
		p.refuse = fmt.Sprintf("the container got %d GPU(s) when it was created and keeps them; ask for at least %d", len(created), len(created))
		n = len(created)
	}
	for i := len(live) - 1; i >= 0 && have > n; i-- {
		p.remove = append(p.remove, live[i])
		have -= attachmentN(live[i])
	}
	if have < n {
		p.add = n - have
	}
	return p
}

// diffIDs is diff for a list of GPUs: attachments holding a GPU not
// listed go, listed GPUs not held come.
func diffIDs(p plan, created []string, live []*hotgpuv1.GPUAttachment, want []string) plan {
	have := map[string]bool{}
	for _, u := range created {
		have[u] = true
		if !slices.Contains(want, u) {
			p.refuse = fmt.Sprintf("GPU %s came with the container when it was created and stays; list it", u)
		}
	}
	for _, a := range live {
		uuids := attachmentUUIDs(a)
		if len(uuids) == 0 || slices.ContainsFunc(uuids, func(u string) bool { return !slices.Contains(want, u) }) {
			p.remove = append(p.remove, a)
			continue
		}
		for _, u := range uuids {
			have[u] = true
		}
	}
	for _, u := range want {
		if !have[u] {
			p.addIDs = append(p.addIDs, u)
		}
	}
	return p
}

// enqueuePod queues a pod of this node whose annotation may have changed.
func (ag *Agent) enqueuePod(p *corev1.Pod) {
	ag.queue.Add(podKeyPrefix + p.Namespace + "/" + p.Name)
}

// adjustPod converges every container of a running pod to its annotation.
func (ag *Agent) adjustPod(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(strings.TrimPrefix(key, podKeyPrefix), "/")
	pod, err := ag.pods.Pods(ns).Get(name)
	if err != nil || pod.DeletionTimestamp != nil {
		return nil // gone: the garbage collector takes care
	}
	if err := ag.unchargeDone(ctx, pod); err != nil {
		return err
	}
	if !podRunning(pod) {
		return nil // creation takes care
	}
	applied := map[string]string{}
	var errs []error
	for _, c := range pod.Spec.Containers {
		n, err := ag.adjustContainer(ctx, pod, c.Name)
		if err != nil {
			errs = append(errs, err)
		}
		if n >= 0 {
			applied[AppliedPrefix+c.Name] = strconv.Itoa(n)
		}
	}
	if err := ag.setApplied(ctx, pod, applied); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// adjustContainer converges one container and returns how many GPUs it
// holds now by creation and the annotation's attachments, or -1 when the
// annotation does not concern it.
func (ag *Agent) adjustContainer(ctx context.Context, pod *corev1.Pod, container string) (int, error) {
	atts := ag.annotationAttachments(pod, container)
	value, asked := pod.Annotations[policy.AnnotationKey(container)]
	if !asked && len(atts) == 0 {
		return -1, nil
	}
	created, kubelet := ag.createdGPUs(pod, container)
	held := len(created)
	for _, a := range atts {
		if a.Status.Phase == hotgpuv1.Attached {
			held += len(a.Status.GPUs)
		}
	}
	req := policy.Request{Count: len(created)} // annotation removed: back to creation's GPUs
	if asked {
		r, _, err := ag.policy.FromAnnotations(pod.Namespace, container, pod.Annotations)
		if err != nil {
			ag.refuse(pod, container, value, err.Error())
			return held, nil
		}
		req = r
	}
	var want []string
	if len(req.IDs) > 0 {
		gpus, err := ag.inv.Inventory().LookupAll(req.IDs)
		if err != nil {
			ag.refuse(pod, container, value, fmt.Sprintf("annotation %s=%q: %v", policy.AnnotationKey(container), value, err))
			return held, nil
		}
		for _, g := range gpus {
			want = append(want, g.UUID)
		}
	}
	if kubelet > 0 {
		ag.refuse(pod, container, value, fmt.Sprintf("annotation %s: the container already has %d GPU(s) from kubelet; "+
			"ask for GPUs one way, not both", policy.AnnotationKey(container), kubelet))
		return held, nil
	}
	var pending []*hotgpuv1.GPUAttachment
	for _, a := range atts {
		if a.DeletionTimestamp == nil {
			pending = append(pending, a)
		}
	}
	p := diff(value, req, created, pending, want)
	if p.refuse != "" {
		ag.refuse(pod, container, value, p.refuse)
	}
	for _, a := range p.remove {
		err := ag.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).Delete(ctx, a.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return held, fmt.Errorf("failed to delete attachment %s/%s: %w", a.Namespace, a.Name, err)
		}
		ag.mu.Lock()
		ag.gone[a.Namespace+"/"+a.Name] = pod.Namespace + "/" + pod.Name
		delete(ag.made, a.Namespace+"/"+a.Name)
		ag.mu.Unlock()
	}
	if p.add > 0 || len(p.addIDs) > 0 {
		if err := ag.create(ctx, pod, container, value, p.add, p.addIDs); err != nil {
			return held, err
		}
	}
	return held, nil
}

// refuse records on the pod, once per value and reason, why its
// annotation changes nothing.
func (ag *Agent) refuse(pod *corev1.Pod, container, value, msg string) {
	key := string(pod.UID) + "/" + container
	said := value + "\x00" + msg
	ag.mu.Lock()
	same := ag.refused[key] == said
	ag.refused[key] = said
	ag.mu.Unlock()
	if !same {
		ag.recorder.Eventf(pod, corev1.EventTypeWarning, ReasonRefused, "container %s: %s", container, msg)
	}
}

// forget drops what was told about a deleted pod.
func (ag *Agent) forget(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	for k := range ag.refused {
		if strings.HasPrefix(k, string(p.UID)+"/") {
			delete(ag.refused, k)
		}
	}
	for k := range ag.uncharged {
		if strings.HasPrefix(k, string(p.UID)+"/") {
			delete(ag.uncharged, k)
		}
	}
	for k, a := range ag.made {
		if a.Namespace == p.Namespace && a.Spec.PodName == p.Name {
			delete(ag.made, k)
		}
	}
	for k, of := range ag.gone {
		if of == p.Namespace+"/"+p.Name {
			delete(ag.gone, k)
		}
	}
}

// createdGPUs returns the GPUs the ledger gave the container by annotation
// when it was created, and counts those kubelet gave it.
func (ag *Agent) createdGPUs(pod *corev1.Pod, container string) (annotation []string, kubelet int) {
	for _, g := range ag.grants.Grants() {
		h := g.Holder
		if g.State != ledger.Active || h.PodNamespace != pod.Namespace || h.PodName != pod.Name || h.Container != container {
			continue
		}
		switch g.Reason {
		case ledger.Annotation:
			annotation = append(annotation, g.GPU)
		case ledger.Kubelet:
			kubelet++
		}
	}
	return annotation, kubelet
}

// annotationAttachments returns the pod's attachments for container that
// carry its annotation, oldest first. The watch may lag behind the agent's
// own writes: an attachment it created and the watch has not shown yet
// counts, one it deleted counts as being deleted, so a second pass never
// creates or deletes twice.
func (ag *Agent) annotationAttachments(pod *corev1.Pod, container string) []*hotgpuv1.GPUAttachment {
	podKey := pod.Namespace + "/" + pod.Name
	ag.mu.Lock()
	defer ag.mu.Unlock()
	var out []*hotgpuv1.GPUAttachment
	seen := map[string]bool{}
	for _, inf := range ag.informersOf() {
		objs, _ := inf.GetIndexer().ByIndex(byPod, podKey)
		for _, o := range objs {
			a, err := fromUnstructured(o)
			if err != nil || !fromAnnotation(a) || a.Spec.Container != container || !ownedBy(a, pod) {
				continue
			}
			key := a.Namespace + "/" + a.Name
			seen[key] = true
			delete(ag.made, key)
			if _, deleted := ag.gone[key]; deleted && a.DeletionTimestamp == nil {
				now := metav1.Now()
				a.DeletionTimestamp = &now
			} else {
				delete(ag.gone, key)
			}
			out = append(out, a)
		}
	}
	for key, a := range ag.made {
		if !seen[key] && a.Namespace+"/"+a.Spec.PodName == podKey && a.Spec.Container == container {
			out = append(out, a)
		}
	}
	for key, of := range ag.gone {
		if of == podKey && !seen[key] {
			delete(ag.gone, key) // gone from the watch too
		}
	}
	slices.SortFunc(out, func(x, y *hotgpuv1.GPUAttachment) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

// create makes the attachment that carries n more GPUs, or the GPUs ids,
// for the container, already claimed: labelled with this node, owned by the
// pod, finalized.
func (ag *Agent) create(ctx context.Context, pod *corev1.Pod, container, value string, n int, ids []string) error {
	var count *int32
	if len(ids) == 0 {
		c := int32(n)
		count = &c
	}
	a := &hotgpuv1.GPUAttachment{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: pod.Name + "-" + container + "-",
			Namespace:    pod.Namespace,
			Labels:       map[string]string{hotgpuv1.NodeLabel: ag.node, SourceLabel: SourceAnnotation},
			Annotations:  map[string]string{ValueAnnotation: value},
			Finalizers:   []string{hotgpuv1.Finalizer},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		},
		Spec: hotgpuv1.GPUAttachmentSpec{PodName: pod.Name, Container: container, Count: count, GPUs: ids,
			DetachPolicy: hotgpuv1.Graceful},
	}
	u, err := toUnstructured(a)
	if err != nil {
		return err
	}
	made, err := ag.dyn.Resource(hotgpuv1.Resource).Namespace(pod.Namespace).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to create an attachment for %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if a, err = fromUnstructured(made); err == nil {
		ag.mu.Lock()
		ag.made[a.Namespace+"/"+a.Name] = a
		ag.mu.Unlock()
	}
	ag.log.WithFields(map[string]any{"pod": pod.Namespace + "/" + pod.Name, "container": container, "count": n, "gpus": ids}).
		Info("annotation asks for more GPUs: attachment created")
	return nil
}

// setApplied writes the applied annotations onto the pod when they differ.
func (ag *Agent) setApplied(ctx context.Context, pod *corev1.Pod, applied map[string]string) error {
	patch := map[string]any{}
	for k, v := range applied {
		if pod.Annotations[k] != v {
			patch[k] = v
		}
	}
	if len(patch) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
	if err != nil {
		return err
	}
	_, err = ag.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("failed to write the applied GPUs on pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
