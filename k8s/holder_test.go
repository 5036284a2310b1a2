package k8s

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

const pause = "hotgpu.local/pause:1"

// holderEnv is an agent using holder pods, with pod nb and attachment a1
// (UID att-1) of 1 GPU.
func holderEnv(t *testing.T) *env {
	t.Helper()
	target := pod("nb")
	target.Spec.PriorityClassName = "high"
	e := newEnv(t, target)
	e.ag.UseHolders(pause, "")
	a := attachment("a1", "nb", true)
	a.UID = "att-1"
	e.create(a)
	return e
}

// holderCreated returns the holder pod the agent created in the API and
// puts it into the agent's cache as phase, with the GPUs of uuids
// allocated to it by kubelet in the ledger.
func (e *env) holderCreated(phase corev1.PodPhase, uuids ...string) *corev1.Pod {
	e.t.Helper()
	h, err := e.client.CoreV1().Pods("team-a").Get(context.Background(), "gpuatt-holder-a1", metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("no holder pod: %v", err)
	}
	h = h.DeepCopy()
	h.UID = "holder-uid"
	h.Status.Phase = phase
	if err := e.ag.podCache.Update(h); err != nil {
		e.t.Fatal(err)
	}
	for _, u := range uuids {
		*e.grants = append(*e.grants, ledger.Grant{GPU: u, Reason: ledger.Kubelet, State: ledger.Active,
			Holder: ledger.Holder{ContainerID: "pause", PodUID: string(h.UID), PodNamespace: "team-a", PodName: h.Name}})
	}
	return h
}

func TestHolderPodAsksTheGPUsAndItsAllocationMoves(t *testing.T) {
	e := holderEnv(t)
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Pending || len(e.att.attached) != 0 {
		t.Fatalf("status %+v, attach calls %v: want Pending until the holder runs", a.Status, e.att.attached)
	}
	h := e.holderCreated(corev1.PodPending)
	gpus := h.Spec.Containers[0].Resources
	if h.Spec.NodeName != node || h.Spec.PriorityClassName != "high" || h.Spec.Containers[0].Image != pause ||
		gpus.Requests.Name("nvidia.com/gpu", "").Value() != 1 || gpus.Limits.Name("nvidia.com/gpu", "").Value() != 1 ||
		h.Annotations[policy.HolderAnnotation] != "att-1" || len(h.OwnerReferences) != 1 || h.OwnerReferences[0].UID != "att-1" {
		t.Fatalf("holder pod %+v", h)
	}
	checkPlaceholderSize(t, gpus)
	e.holderCreated(corev1.PodRunning, "GPU-5")
	a = e.settle("a1")
	if a.Status.Phase != hotgpuv1.Attached || len(a.Status.GPUs) != 1 || a.Status.GPUs[0].UUID != "GPU-5" {
		t.Fatalf("status %+v, want Attached with the holder's GPU-5", a.Status)
	}
	if !slices.Equal(e.att.moved, []string{"holder-uid"}) {
		t.Fatalf("moves from %v, want one from the holder", e.att.moved)
	}
	// deleting the attachment detaches, then deletes the holder
	e.deleteAttachment("a1")
	a = e.settle("a1")
	if !slices.Equal(e.att.detached, []string{"GPU-5"}) {
		t.Fatalf("detached %v", e.att.detached)
	}
	if _, err := e.client.CoreV1().Pods("team-a").Get(context.Background(), h.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("holder pod still there after the attachment was deleted: %v", err)
	}
}

// deleteAttachment marks name deleted, as the API server does for an
// object with finalizers.
func (e *env) deleteAttachment(name string) {
	e.t.Helper()
	u, err := e.dyn.Resource(hotgpuv1.Resource).Namespace("team-a").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	now := metav1.Now()
	u.SetDeletionTimestamp(&now)
	if _, err := e.dyn.Resource(hotgpuv1.Resource).Namespace("team-a").Update(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.refresh(name)
}

func TestOverQuotaHolderFailsTheAttachment(t *testing.T) {
	e := holderEnv(t)
	quota := `pods "gpuatt-holder-a1" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2`
	e.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "gpuatt-holder-a1", errString(quota))
	})
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Failed || !strings.Contains(a.Status.Message, "exceeded quota") {
		t.Fatalf("status %+v, want Failed with the quota's message", a.Status)
	}
	if len(e.att.attached) != 0 {
		t.Fatalf("attached %v over quota", e.att.attached)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestHolderGoneDetaches(t *testing.T) {
	e := holderEnv(t)
	e.settle("a1")
	h := e.holderCreated(corev1.PodRunning, "GPU-5")
	if a := e.settle("a1"); a.Status.Phase != hotgpuv1.Attached {
		t.Fatalf("status %+v", a.Status)
	}
	if err := e.ag.podCache.Delete(h); err != nil { // evicted, preempted, deleted
		t.Fatal(err)
	}
	a := e.settle("a1")
	if !slices.Equal(e.att.detached, []string{"GPU-5"}) {
		t.Fatalf("detached %v, want the holder's GPU", e.att.detached)
	}
	if a.Status.Phase != hotgpuv1.Failed || a.Status.Conditions[0].Reason != "HolderGone" || !strings.Contains(a.Status.Message, "holder pod") {
		t.Fatalf("status %+v, want Failed because the holder went", a.Status)
	}
}

func TestIsHolderNeedsTheAttachment(t *testing.T) {
	e := holderEnv(t)
	e.settle("a1")
	for _, tc := range []struct {
		ns, pod, uid string
		want         bool
	}{
		{"team-a", "gpuatt-holder-a1", "att-1", true},
		{"team-a", "gpuatt-holder-a1", "att-2", false}, // no such attachment
		{"team-a", "impostor", "att-1", false},         // not the attachment's holder
		{"team-b", "gpuatt-holder-a1", "att-1", false}, // another namespace
		{"team-a", "gpuatt-holder-a1", "", false},
	} {
		if got := e.ag.IsHolder(tc.ns, tc.pod, "", tc.uid); got != tc.want {
			t.Errorf("IsHolder(%s, %s, %q) = %t, want %t", tc.ns, tc.pod, tc.uid, got, tc.want)
		}
	}
	e.ag.UseHolders("", "")
	if e.ag.IsHolder("team-a", "gpuatt-holder-a1", "", "att-1") {
		t.Error("an agent without holder pods confirmed one")
	}
}

// The holder's GPUs recorded in the ledger for its container (NRI's
// CreateContainer) start the move: the ledger's change queues the
// attachment, and it is Attached while kubelet still reports the holder
// Pending (its status comes with the next relist).
func TestHolderGPUsInTheLedgerStartTheMove(t *testing.T) {
	e := holderEnv(t)
	e.settle("a1")
	e.holderCreated(corev1.PodPending)
	e.ag.ledgerChanged()
	if n := e.ag.queue.Len(); n != 0 {
		t.Fatalf("%d attachments queued with no GPU recorded for the holder", n)
	}
	e.holderCreated(corev1.PodPending, "GPU-5")
	e.ag.ledgerChanged()
	key, _ := e.ag.queue.Get()
	if e.ag.queue.Len() != 0 || key != "team-a/a1" {
		t.Fatalf("queued %q (+%d), want team-a/a1 alone", key, e.ag.queue.Len())
	}
	e.ag.queue.Done(key)
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Attached || len(a.Status.GPUs) != 1 || a.Status.GPUs[0].UUID != "GPU-5" ||
		!slices.Equal(e.att.moved, []string{"holder-uid"}) {
		t.Fatalf("status %+v, moves from %v: want Attached with the holder's GPU-5", a.Status, e.att.moved)
	}
	e.ag.ledgerChanged()
	if n := e.ag.queue.Len(); n != 0 {
		t.Fatalf("%d attachments queued once Attached", n)
	}
}

// Near tells the device plugin, while one holder pod waits for kubelet's
// allocation, the GPUs its target container holds; nothing once the holder
// has its GPUs, for another size, or while two holders wait.
func TestNearNamesTheWaitingHoldersTarget(t *testing.T) {
	e := holderEnv(t)
	*e.grants = append(*e.grants,
		ledger.Grant{GPU: "GPU-4", Reason: ledger.Kubelet, State: ledger.Active,
			Holder: ledger.Holder{ContainerID: "nb-main", PodUID: "uid-nb", PodNamespace: "team-a", PodName: "nb", Container: "main"}},
		ledger.Grant{GPU: "GPU-0", Reason: ledger.Kubelet, State: ledger.Active,
			Holder: ledger.Holder{ContainerID: "other", PodUID: "uid-other", PodNamespace: "team-a", PodName: "other", Container: "main"}})
	if got := e.ag.Near(1); got != nil {
		t.Fatalf("Near(1) = %v before any holder exists", got)
	}
	e.settle("a1")
	// the holder is created, and kubelet asks before this node's cache has it
	if got := e.ag.Near(1); !slices.Equal(got, []string{"GPU-4"}) {
		t.Fatalf("Near(1) = %v with a1's holder just created, want nb's GPU-4", got)
	}
	e.holderCreated(corev1.PodPending)
	if got := e.ag.Near(1); !slices.Equal(got, []string{"GPU-4"}) {
		t.Fatalf("Near(1) = %v with a1's holder waiting, want nb's GPU-4", got)
	}
	if got := e.ag.Near(2); got != nil {
		t.Fatalf("Near(2) = %v, want nil: the waiting holder asks 1", got)
	}

	// a second holder waiting: which one asks is unknown
	if err := e.ag.podCache.Add(pod("nb2")); err != nil {
		t.Fatal(err)
	}
	a2 := attachment("a2", "nb2", true)
	a2.UID = "att-2"
	e.create(a2)
	e.settle("a2")
	h2, err := e.client.CoreV1().Pods("team-a").Get(context.Background(), "gpuatt-holder-a2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ag.podCache.Add(h2); err != nil {
		t.Fatal(err)
	}
	if got := e.ag.Near(1); got != nil {
		t.Fatalf("Near(1) = %v with two holders waiting, want nil", got)
	}
	if err := e.ag.podCache.Delete(h2); err != nil {
		t.Fatal(err)
	}

	// a1's holder has its GPU: nothing waits
	e.holderCreated(corev1.PodPending, "GPU-5")
	if got := e.ag.Near(1); got != nil {
		t.Fatalf("Near(1) = %v once the holder has its GPU, want nil", got)
	}
}

// A status write that conflicts (the cache has not caught up with the
// agent's own last write) is written once more onto the API's copy, not
// left to a rate-limited retry.
func TestStatusConflictWritesOntoTheAPIsCopy(t *testing.T) {
	e := newEnv(t, pod("nb"))
	e.create(attachment("a1", "nb", true))
	stale := e.refresh("a1")
	conflicts := 0
	e.dyn.PrependReactor("update", "gpuattachments", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "status" || conflicts > 0 {
			return false, nil, nil
		}
		conflicts++
		return true, nil, apierrors.NewConflict(hotgpuv1.Resource.GroupResource(), "a1", errString("the object has been modified"))
	})
	if err := e.ag.setStatus(context.Background(), stale, hotgpuv1.Attached, "Attached", "attached live", nil); err != nil {
		t.Fatalf("setStatus after a conflict: %v", err)
	}
	if a := e.refresh("a1"); conflicts != 1 || a.Status.Phase != hotgpuv1.Attached {
		t.Fatalf("%d conflicts, status %+v: want Attached written after one conflict", conflicts, a.Status)
	}
	// a decision made on a view older than a settled outcome is not written
	conflicts = 0
	if err := e.ag.setStatus(context.Background(), stale, hotgpuv1.Pending, "Waiting", "waiting for holder pod", nil); !apierrors.IsConflict(err) {
		t.Fatalf("setStatus Pending over Attached after a conflict: %v, want the conflict", err)
	}
	if a := e.refresh("a1"); a.Status.Phase != hotgpuv1.Attached {
		t.Fatalf("status %+v, want Attached left alone", a.Status)
	}
}

// checkPlaceholderSize checks that a holder or charge pod says how much CPU
// and memory it takes, as requests and limits alike: a namespace whose
// quota counts them refuses a pod that does not.
func checkPlaceholderSize(t *testing.T, r corev1.ResourceRequirements) {
	t.Helper()
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, ok1 := r.Requests[name]
		lim, ok2 := r.Limits[name]
		if !ok1 || !ok2 || req.IsZero() || req.Cmp(lim) != 0 {
			t.Errorf("%s: request %v (%t), limit %v (%t); want both, equal, above zero", name, req.String(), ok1, lim.String(), ok2)
		}
	}
}
