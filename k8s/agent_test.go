package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

const node = "node-1"

// fakeAttacher records calls, and grants in the fake ledger, and answers
// with attachErr/detachErr.
type fakeAttacher struct {
	grants    *fakeGrants
	attached  []attach.Target
	moved     []string // holder pod UIDs
	detached  []string
	attachErr error
	detachErr error
}

func (f *fakeAttacher) Attach(t attach.Target, ids []string, count int) (*attach.Result, error) {
	if f.attachErr != nil {
		return nil, f.attachErr
	}
	f.attached = append(f.attached, t)
	var gpus []gpu.GPU
	for i := range count {
		gpus = append(gpus, gpu.GPU{Index: 3 + i, UUID: fmt.Sprintf("GPU-%d", 3+i)})
		*f.grants = append(*f.grants, ledger.Grant{GPU: fmt.Sprintf("GPU-%d", 3+i), Reason: ledger.Attach, State: ledger.Active,
			Holder: ledger.Holder{PodNamespace: t.PodNamespace, PodName: t.PodName, Container: "main"}})
	}
	return &attach.Result{GPUs: gpus}, nil
}

func (f *fakeAttacher) Move(t attach.Target, holderUID string, uuids []string) (*attach.Result, error) {
	if f.attachErr != nil {
		return nil, f.attachErr
	}
	f.attached = append(f.attached, t)
	f.moved = append(f.moved, holderUID)
	var gpus []gpu.GPU
	for _, u := range uuids {
		var idx int
		_, _ = fmt.Sscanf(u, "GPU-%d", &idx)
		gpus = append(gpus, gpu.GPU{Index: idx, UUID: u})
		*f.grants = slices.DeleteFunc(*f.grants, func(g ledger.Grant) bool { return g.GPU == u })
		*f.grants = append(*f.grants, ledger.Grant{GPU: u, Reason: ledger.Attach, State: ledger.Active,
			Holder: ledger.Holder{PodNamespace: t.PodNamespace, PodName: t.PodName, Container: "main", Realises: holderUID}})
	}
	return &attach.Result{GPUs: gpus}, nil
}

func (f *fakeAttacher) Detach(t attach.Target, ids []string, force bool) (*attach.Result, error) {
	if f.detachErr != nil && !force {
		return nil, f.detachErr
	}
	f.detached = append(f.detached, ids...)
	*f.grants = slices.DeleteFunc(*f.grants, func(g ledger.Grant) bool { return slices.Contains(ids, g.GPU) })
	return &attach.Result{}, nil
}

type fakeInventory struct{}

func (fakeInventory) Inventory() *gpu.Inventory {
	inv := &gpu.Inventory{}
	for i := range 8 {
		inv.GPUs = append(inv.GPUs, gpu.GPU{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%d", i)})
	}
	return inv
}

type fakeGrants []ledger.Grant

func (g *fakeGrants) Grants() []ledger.Grant { return *g }

type env struct {
	t      *testing.T
	ag     *Agent
	dyn    *dynamicfake.FakeDynamicClient
	att    *fakeAttacher
	grants *fakeGrants
	named  []string // attachments created by the agent
	client *kubefake.Clientset
}

func newEnv(t *testing.T, pods ...*corev1.Pod) *env {
	t.Helper()
	s := runtime.NewScheme()
	if err := hotgpuv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{hotgpuv1.Resource: "GPUAttachmentList"})
	log := logrus.New()
	log.SetOutput(io.Discard)
	grants := &fakeGrants{}
	e := &env{t: t, dyn: dyn, att: &fakeAttacher{grants: grants}, grants: grants, client: kubefake.NewClientset()}
	ag, err := newAgent(e.client, dyn, node, e.att, e.grants, fakeInventory{}, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	e.ag = ag
	for _, p := range pods {
		if err := ag.podCache.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: "uid-" + types.UID(name)},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func attachment(name, podName string, labelled bool) *hotgpuv1.GPUAttachment {
	one := int32(1)
	a := &hotgpuv1.GPUAttachment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", Generation: 1},
		Spec: hotgpuv1.GPUAttachmentSpec{PodName: podName, Count: &one, DetachPolicy: hotgpuv1.Graceful}}
	if labelled {
		a.Labels = map[string]string{hotgpuv1.NodeLabel: node}
	}
	return a
}

// create stores a in the fake API and the agent's cache.
func (e *env) create(a *hotgpuv1.GPUAttachment) {
	e.t.Helper()
	u, err := toUnstructured(a)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.dyn.Resource(hotgpuv1.Resource).Namespace(a.Namespace).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.refresh(a.Name)
}

// refresh puts the API's copy of an attachment into the watch it matches,
// as the informers would.
func (e *env) refresh(name string) *hotgpuv1.GPUAttachment {
	e.t.Helper()
	u, err := e.dyn.Resource(hotgpuv1.Resource).Namespace("team-a").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	_ = e.ag.owned.GetIndexer().Delete(u)
	_ = e.ag.unowned.GetIndexer().Delete(u)
	target := e.ag.unowned
	if u.GetLabels()[hotgpuv1.NodeLabel] == node {
		target = e.ag.owned
	}
	if err := target.GetIndexer().Add(u); err != nil {
		e.t.Fatal(err)
	}
	a, err := fromUnstructured(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// settle reconciles name until nothing changes (at most a few passes).
func (e *env) settle(name string) *hotgpuv1.GPUAttachment {
	e.t.Helper()
	var a *hotgpuv1.GPUAttachment
	for range 5 {
		if _, err := e.ag.reconcile(context.Background(), "team-a/"+name); err != nil {
			e.t.Fatal(err)
		}
		a = e.refresh(name)
	}
	return a
}

func TestAttachClaimsAndAttaches(t *testing.T) {
	for _, labelled := range []bool{true, false} {
		t.Run(fmt.Sprintf("labelled=%t", labelled), func(t *testing.T) {
			e := newEnv(t, pod("nb"))
			e.create(attachment("a1", "nb", labelled))
			a := e.settle("a1")
			if a.Labels[hotgpuv1.NodeLabel] != node || !slices.Contains(a.Finalizers, hotgpuv1.Finalizer) ||
				len(a.OwnerReferences) != 1 || a.OwnerReferences[0].Name != "nb" {
				t.Fatalf("not claimed: labels %v finalizers %v owners %v", a.Labels, a.Finalizers, a.OwnerReferences)
			}
			if a.Status.Phase != hotgpuv1.Attached || len(a.Status.GPUs) != 1 || a.Status.GPUs[0].Index != 3 || a.Status.NodeName != node {
				t.Fatalf("status %+v, want Attached with GPU 3 on %s", a.Status, node)
			}
			if len(e.att.attached) != 1 || e.att.attached[0] != (attach.Target{PodNamespace: "team-a", PodName: "nb"}) {
				t.Fatalf("attach calls %v, want one for team-a/nb", e.att.attached)
			}
		})
	}
}

func TestOtherNodesAttachmentUntouched(t *testing.T) {
	e := newEnv(t) // the pod is not on this node
	e.create(attachment("a1", "elsewhere", false))
	a := e.settle("a1")
	if len(a.Labels) != 0 || len(a.Finalizers) != 0 || a.Status.Phase != "" || len(e.att.attached) != 0 {
		t.Fatalf("another node's attachment was changed: %+v", a)
	}
}

func TestAttachFailureFails(t *testing.T) {
	e := newEnv(t, pod("nb"))
	e.att.attachErr = errors.New("only 0 GPUs free, 1 asked")
	e.create(attachment("a1", "nb", true))
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Failed || !strings.Contains(a.Status.Message, "only 0 GPUs free") {
		t.Fatalf("status %+v, want Failed with the attach error", a.Status)
	}
}

func TestGracefulDetachWaitsForProcess(t *testing.T) {
	e := newEnv(t, pod("nb"))
	e.create(attachment("a1", "nb", true))
	a := e.settle("a1")
	e.att.detachErr = fmt.Errorf("%w: GPU 3 is held open by process(es) 41 (python)", attach.ErrBusy)
	now := metav1.Now()
	a.DeletionTimestamp = &now // the fake API does not keep finalized objects: set it in the cache
	u, _ := toUnstructured(a)
	_ = e.ag.owned.GetIndexer().Update(u)
	if _, err := e.ag.reconcile(context.Background(), "team-a/a1"); err != nil {
		t.Fatal(err)
	}
	got := e.refresh("a1")
	if got.Status.Phase != hotgpuv1.Detaching || !strings.Contains(got.Status.Message, "process(es) 41") ||
		!slices.Contains(got.Finalizers, hotgpuv1.Finalizer) {
		t.Fatalf("busy GPU: status %+v finalizers %v, want Detaching naming the process, finalizer kept", got.Status, got.Finalizers)
	}
	e.att.detachErr = nil
	got.DeletionTimestamp = &now
	u, _ = toUnstructured(got)
	_ = e.ag.owned.GetIndexer().Update(u)
	if _, err := e.ag.reconcile(context.Background(), "team-a/a1"); err != nil {
		t.Fatal(err)
	}
	if got := e.refresh("a1"); slices.Contains(got.Finalizers, hotgpuv1.Finalizer) || !slices.Equal(e.att.detached, []string{"GPU-3"}) {
		t.Fatalf("after the process exited: finalizers %v, detached %v", got.Finalizers, e.att.detached)
	}
}

// TestRestartAdoptsFinishedAttach: hotgpud stopped after the attach, before
// the status: the ledger's grant is taken up, not attached twice.
func TestRestartAdoptsFinishedAttach(t *testing.T) {
	e := newEnv(t, pod("nb"))
	*e.grants = fakeGrants{{GPU: "GPU-5", Reason: ledger.Attach, State: ledger.Active,
		Holder: ledger.Holder{PodNamespace: "team-a", PodName: "nb", Container: "main"}}}
	e.create(attachment("a1", "nb", true))
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Attached || len(a.Status.GPUs) != 1 || a.Status.GPUs[0].UUID != "GPU-5" || len(e.att.attached) != 0 {
		t.Fatalf("status %+v, attach calls %v: want GPU-5 adopted, no new attach", a.Status, e.att.attached)
	}
}

func TestContainerChecked(t *testing.T) {
	p := pod("nb")
	p.Spec.Containers = []corev1.Container{{Name: "main"}, {Name: "sidecar"}}
	for _, tc := range []struct{ container, want string }{
		{"", "has 2 containers [main sidecar]: name one"},
		{"nope", `has no container "nope"`},
	} {
		e := newEnv(t, p)
		att := attachment("a1", "nb", true)
		att.Spec.Container = tc.container
		e.create(att)
		a := e.settle("a1")
		if a.Status.Phase != hotgpuv1.Failed || !strings.Contains(a.Status.Message, tc.want) || len(e.att.attached) != 0 {
			t.Errorf("container %q: status %+v, attach calls %v; want Failed with %q", tc.container, a.Status, e.att.attached, tc.want)
		}
	}
}

// TestContainerRestartReattaches: an Attached attachment whose grants the
// ledger no longer holds (the container restarted) is attached again.
func TestContainerRestartReattaches(t *testing.T) {
	e := newEnv(t, pod("nb"))
	e.create(attachment("a1", "nb", true))
	e.settle("a1")
	e.settle("a1")
	if len(e.att.attached) != 1 {
		t.Fatalf("attach calls %v while the grant holds, want 1", e.att.attached)
	}
	*e.grants = fakeGrants{} // the container restarted: its grants ended
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Attached || len(e.att.attached) != 2 {
		t.Fatalf("status %+v, attach calls %v: want attached again", a.Status, e.att.attached)
	}
}

// TestAttachmentBeforeItsPod: an attachment seen before its pod reaches this
// node's cache waits (Pending), and is attached once the pod's event comes.
func TestAttachmentBeforeItsPod(t *testing.T) {
	e := newEnv(t)
	e.create(attachment("a1", "nb", true))
	a := e.settle("a1")
	if a.Status.Phase != hotgpuv1.Pending || len(e.att.attached) != 0 {
		t.Fatalf("status %+v before the pod, want Pending", a.Status)
	}
	if err := e.ag.podCache.Add(pod("nb")); err != nil {
		t.Fatal(err)
	}
	e.ag.onPod(pod("nb"))
	if e.ag.queue.Len() != 2 { // the attachment, and the pod for its annotation
		t.Fatalf("the pod's event queued %d keys, want 2", e.ag.queue.Len())
	}
	if a := e.settle("a1"); a.Status.Phase != hotgpuv1.Attached {
		t.Fatalf("status %+v once the pod is here, want Attached", a.Status)
	}
}
