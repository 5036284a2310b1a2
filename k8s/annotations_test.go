package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

func annAttachment(name, value string, n int32, phase hotgpuv1.Phase) *hotgpuv1.GPUAttachment {
	a := &hotgpuv1.GPUAttachment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a",
		Labels:      map[string]string{hotgpuv1.NodeLabel: node, SourceLabel: SourceAnnotation},
		Annotations: map[string]string{ValueAnnotation: value}},
		Spec:   hotgpuv1.GPUAttachmentSpec{PodName: "p", Container: "main", Count: &n},
		Status: hotgpuv1.GPUAttachmentStatus{Phase: phase, Message: "no free GPU"}}
	return a
}

func TestDiff(t *testing.T) {
	one := annAttachment("one", "2", 1, hotgpuv1.Attached)
	one.Status.GPUs = []hotgpuv1.AttachedGPU{{Index: 3, UUID: "GPU-3"}}
	two := annAttachment("two", "3", 1, hotgpuv1.Pending)
	failed := annAttachment("failed", "4", 1, hotgpuv1.Failed)
	for _, tc := range []struct {
		name    string
		value   string
		created []string
		atts    []*hotgpuv1.GPUAttachment
		want    []string // the listed GPUs, resolved
		add     int
		addIDs  []string
		remove  []string
		refuse  string
	}{
		{name: "more", value: "2", created: []string{"GPU-0"}, add: 1},
		{name: "same", value: "2", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one}},
		{name: "pending counts", value: "3", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, two}},
		{name: "more again", value: "4", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one}, add: 2},
		{name: "fewer removes newest first", value: "2", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, two}, remove: []string{"two"}},
		{name: "back to creation", value: "1", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, two}, remove: []string{"two", "one"}},
		{name: "below creation", value: "1", created: []string{"GPU-0", "GPU-1"}, atts: []*hotgpuv1.GPUAttachment{one}, remove: []string{"one"}, refuse: "got 2 GPU(s) when it was created"},
		{name: "failed for this value", value: "4", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, failed}, refuse: "no free GPU"},
		{name: "failed for another value", value: "3", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, failed}, remove: []string{"failed"}, add: 1},
		{name: "list adds", value: "0,5", created: []string{"GPU-0"}, want: []string{"GPU-0", "GPU-5"}, addIDs: []string{"GPU-5"}},
		{name: "list keeps and adds", value: "0,3,5", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one}, want: []string{"GPU-0", "GPU-3", "GPU-5"}, addIDs: []string{"GPU-5"}},
		{name: "list drops", value: "0,5", created: []string{"GPU-0"}, atts: []*hotgpuv1.GPUAttachment{one, two}, want: []string{"GPU-0", "GPU-5"}, remove: []string{"one", "two"}, addIDs: []string{"GPU-5"}},
		{name: "list without a created GPU", value: "5,6", created: []string{"GPU-0"}, want: []string{"GPU-5", "GPU-6"}, addIDs: []string{"GPU-5", "GPU-6"}, refuse: "GPU GPU-0 came with the container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := policy.ParseRequest(tc.value)
			if err != nil {
				t.Fatal(err)
			}
			p := diff(tc.value, req, tc.created, tc.atts, tc.want)
			var removed []string
			for _, a := range p.remove {
				removed = append(removed, a.Name)
			}
			if p.add != tc.add || fmt.Sprint(p.addIDs) != fmt.Sprint(tc.addIDs) || fmt.Sprint(removed) != fmt.Sprint(tc.remove) ||
				(tc.refuse == "") != (p.refuse == "") || !strings.Contains(p.refuse, tc.refuse) {
				t.Fatalf("diff = add %d %v remove %v refuse %q, want add %d %v remove %v refuse %q",
					p.add, p.addIDs, removed, p.refuse, tc.add, tc.addIDs, tc.remove, tc.refuse)
			}
		})
	}
}

// annEnv is an agent with the annotation policy allowing team-a, a pod p
// running with annotation value, one GPU from creation, and events caught.
func annEnv(t *testing.T, value string) (*env, *corev1.Pod, *record.FakeRecorder) {
	p := pod("p")
	p.Spec.Containers = []corev1.Container{{Name: "main"}}
	p.Annotations = map[string]string{policy.AnnotationKey("main"): value}
	e := newEnv(t, p)
	e.ag.SetAnnotationPolicy(policy.Policy{Namespaces: []string{"team-a"}, MaxPerContainer: 4})
	for _, ns := range []string{"team-a", "team-b"} {
		q := p.DeepCopy()
		q.Namespace = ns
		if _, err := e.ag.client.CoreV1().Pods(ns).Create(context.Background(), q, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec := record.NewFakeRecorder(20)
	e.ag.recorder = rec
	*e.grants = append(*e.grants, ledger.Grant{GPU: "GPU-0", Reason: ledger.Annotation, State: ledger.Active,
		Holder: ledger.Holder{PodNamespace: "team-a", PodName: "p", Container: "main"}})
	n := 0
	e.dyn.PrependReactor("create", "gpuattachments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.CreateAction).GetObject().(*unstructured.Unstructured)
		if u.GetName() == "" {
			n++
			u.SetName(fmt.Sprintf("%s%d", u.GetGenerateName(), n))
		}
		e.named = append(e.named, u.GetName())
		return false, nil, nil
	})
	return e, p, rec
}

func (e *env) list() []*hotgpuv1.GPUAttachment {
	e.t.Helper()
	var out []*hotgpuv1.GPUAttachment
	for _, name := range e.named {
		u, err := e.dyn.Resource(hotgpuv1.Resource).Namespace("team-a").Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		a, err := fromUnstructured(u)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case ev := <-rec.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestAnnotationRaisedCreatesAttachmentThenLoweredDeletesIt(t *testing.T) {
	e, p, rec := annEnv(t, "2")
	if err := e.ag.adjustPod(context.Background(), podKeyPrefix+"team-a/p"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.ag.client.CoreV1().Pods("team-a").Get(context.Background(), "p", metav1.GetOptions{}); got.Annotations[AppliedPrefix+"main"] != "1" {
		t.Fatalf("applied annotation %q before the attach, want 1", got.Annotations[AppliedPrefix+"main"])
	}
	atts := e.list()
	if len(atts) != 1 {
		t.Fatalf("attachments %v, want 1", atts)
	}
	a := atts[0]
	if a.Spec.Count == nil || *a.Spec.Count != 1 || a.Spec.Container != "main" || a.Labels[SourceLabel] != SourceAnnotation ||
		a.Labels[hotgpuv1.NodeLabel] != node || !ownedBy(a, p) || a.Annotations[ValueAnnotation] != "2" {
		t.Fatalf("attachment %+v, want count 1 for main, from the annotation, owned by p", a)
	}
	a = e.settle(a.Name)
	if a.Status.Phase != hotgpuv1.Attached {
		t.Fatalf("attachment %+v not attached", a.Status)
	}
	if ev := events(rec); !strings.Contains(strings.Join(ev, "\n"), ReasonAttached) {
		t.Fatalf("events %v, want %s", ev, ReasonAttached)
	}
	// adjusting again changes nothing
	if err := e.ag.adjustPod(context.Background(), podKeyPrefix+"team-a/p"); err != nil || len(e.list()) != 1 {
		t.Fatalf("second pass: %v, attachments %d", err, len(e.list()))
	}
	p = p.DeepCopy()
	p.Annotations[policy.AnnotationKey("main")] = "1"
	if err := e.ag.podCache.Update(p); err != nil {
		t.Fatal(err)
	}
	if err := e.ag.adjustPod(context.Background(), podKeyPrefix+"team-a/p"); err != nil {
		t.Fatal(err)
	}
	// the fake API deletes at once (no finalizer handling): the attachment is gone
	if atts := e.list(); len(atts) != 0 {
		t.Fatalf("attachments %v after lowering to 1, want none", atts)
	}
}

func TestAnnotationBadValueOrNamespaceChangesNothing(t *testing.T) {
	for _, tc := range []struct{ name, ns, value, want string }{
		{"not a number", "team-a", "abc", "not a number"},
		{"too many", "team-a", "9", "at most 4 allowed"},
		{"namespace not allowed", "team-b", "2", "namespace \"team-b\" may not request GPUs by annotation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, p, rec := annEnv(t, tc.value)
			if tc.ns != "team-a" {
				p = p.DeepCopy()
				p.Namespace = tc.ns
				_ = e.ag.podCache.Delete(p)
				if err := e.ag.podCache.Add(p); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if err := e.ag.adjustPod(context.Background(), podKeyPrefix+tc.ns+"/p"); err != nil {
					t.Fatal(err)
				}
			}
			if atts := e.list(); len(atts) != 0 || len(e.att.attached) != 0 {
				t.Fatalf("attachments %v, attach calls %v: want nothing", atts, e.att.attached)
			}
			ev := events(rec)
			if len(ev) != 1 || !strings.Contains(ev[0], ReasonRefused) || !strings.Contains(ev[0], tc.want) {
				t.Fatalf("events %v, want one %s saying %q", ev, ReasonRefused, tc.want)
			}
		})
	}
}

func TestAnnotationBusyGPUStays(t *testing.T) {
	e, _, rec := annEnv(t, "2")
	ctx := context.Background()
	if err := e.ag.adjustPod(ctx, podKeyPrefix+"team-a/p"); err != nil {
		t.Fatal(err)
	}
	name := e.list()[0].Name
	e.settle(name)
	e.att.detachErr = fmt.Errorf("GPU 3 is busy: %w", attach.ErrBusy)
	// the API marks it deleted; the finalizer keeps it
	a := e.refresh(name)
	now := metav1.Now()
	a.DeletionTimestamp = &now
	u, _ := toUnstructured(a)
	if err := e.ag.owned.GetIndexer().Update(u); err != nil {
		t.Fatal(err)
	}
	_ = events(rec)
	if _, err := e.ag.reconcile(ctx, "team-a/"+name); err != nil {
		t.Fatal(err)
	}
	if len(e.att.detached) != 0 {
		t.Fatalf("busy GPU detached: %v", e.att.detached)
	}
	if ev := strings.Join(events(rec), "\n"); !strings.Contains(ev, ReasonRefused) || !strings.Contains(ev, "stays until it is free") {
		t.Fatalf("events %q, want %s", ev, ReasonRefused)
	}
}

// TestAnnotationWatchLagCreatesOnce: a second pass before the watch shows
// the attachment the first created (the applied annotation's own pod update
// comes back first) creates no second one.
func TestAnnotationWatchLagCreatesOnce(t *testing.T) {
	e, _, _ := annEnv(t, "3")
	for range 2 {
		if err := e.ag.adjustPod(context.Background(), podKeyPrefix+"team-a/p"); err != nil {
			t.Fatal(err)
		}
	}
	if atts := e.list(); len(atts) != 1 || *atts[0].Spec.Count != 2 {
		t.Fatalf("attachments %v, want one for 2 GPUs", atts)
	}
}
