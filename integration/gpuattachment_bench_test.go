package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// BenchmarkGPUAttachment measures a GPUAttachment of 1 GPU end to end on
// the real cluster, hotgpu deployed by its DaemonSet with holder pods: from
// the client's create returning to the GPU usable in the running target
// container, and from the delete returning to the GPU gone from it and the
// attachment gone. Each step is a moment from t0 (the create or delete call
// returned; the API's own timestamps have 1 s resolution), on this host's
// clock:
//
//	claimed    the agent's claim (node label, finalizer) arrived on a watch: the
//	           agent saw the attachment and wrote once
//	holder     the holder pod arrived on a pod watch (the agent created it)
//	nri        the holder's container record in containerd (its CreatedAt):
//	           kubelet admitted the pod (device plugin Allocate), made its
//	           sandbox and asked for the container; NRI's CreateContainer
//	           recorded the GPU for it
//	moved      the move into the target began (its ledger grant's Since)
//	active     the moved grant seen Active in the ledger (the GPU usable; read
//	           every 5 ms)
//	attached   the attachment's status Attached arrived on the watch
//	usable     a `ctr tasks exec cat /dev/nvidiaN` in the target container,
//	           started once Attached was seen, returned ENXIO (allowed, no
//	           driver); its own cost is reported as probe
//	running    the holder's status Running arrived (kubelet's PLEG relist and
//	           status update: no longer waited for)
//
// and for detach: released (the ledger no longer grants the GPU to the
// target), gone (a probe then gives EPERM or ENOENT), deleted (the
// attachment's deletion arrived on the watch). The ledger is read through
// hotgpud's API every 5 ms. Medians in ms.
//
//	go test -run '^$' -bench GPUAttachment -benchtime 10x ./integration/
func BenchmarkGPUAttachment(b *testing.B) {
	h := deployHotgpu(b)
	target := createPod(b, h.Cluster, busyboxPod("bench-target", 0))
	id := containerID(b, target)
	w := startAttachWatch(b, h)
	att, det := &timeline{steps: map[string][]time.Duration{}}, &timeline{steps: map[string][]time.Duration{}}
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("bench-%d", i)
		i++
		gpu := w.attach(b, name, att)
		att.probe(b, h, id, gpu, "ENXIO")
		b.StopTimer()
		w.holderSteps(b, name, att)
		b.StartTimer()
		w.detach(b, name, gpu, det)
		det.probe(b, h, id, gpu, "")
		det.add("deleted", w.wait(b, "att/"+name+"/deleted").Sub(det.t0))
		b.StopTimer()
		b.Logf("%s: attach %s; detach %s", name, att.last(), det.last())
		w.wait(b, "pod/gpuatt-holder-"+name+"/deleted")
		b.StartTimer()
	}
	for _, k := range []string{"claimed", "holder", "nri", "moved", "active", "attached", "usable", "probe", "running"} {
		b.ReportMetric(median(att.steps[k]), "attach-"+k+"-p50-ms")
	}
	for _, k := range []string{"released", "gone", "deleted", "probe"} {
		b.ReportMetric(median(det.steps[k]), "detach-"+k+"-p50-ms")
	}
}

// timeline collects each step's durations from t0 over the iterations.
type timeline struct {
	t0    time.Time
	steps map[string][]time.Duration
}

func (tl *timeline) add(step string, d time.Duration) { tl.steps[step] = append(tl.steps[step], d) }

// last is the last iteration's steps, in ms.
func (tl *timeline) last() string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(tl.steps)) {
		v := tl.steps[k]
		out = append(out, fmt.Sprintf("%s %.0f", k, float64(v[len(v)-1])/1e6))
	}
	return strings.Join(out, ", ")
}

// probe opens /dev/nvidia<gpu> in the target container with ctr tasks
// exec until the open gives want (ENXIO; "" for EPERM or ENOENT), and
// records usable (or gone) from t0 and the probe's own duration.
func (tl *timeline) probe(b *testing.B, h *hotgpuCluster, id, gpu, want string) {
	b.Helper()
	step := "usable"
	if want == "" {
		step = "gone"
	}
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		start := time.Now()
		got = podOpen(b, h, id, "/dev/nvidia"+gpu)
		took := time.Since(start)
		if got == want || want == "" && (got == "EPERM" || got == "ENOENT") {
			tl.add(step, time.Since(tl.t0))
			tl.add("probe", took)
			return
		}
	}
	b.Fatalf("open /dev/nvidia%s in the target: %s, never %s", gpu, got, step)
}

// podOpen opens path in a CRI container (ctr tasks exec in namespace
// k8s.io) and says how: ok, ENXIO, EPERM, ENOENT or ctr's error.
func podOpen(b testing.TB, h *hotgpuCluster, id, path string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, _ := h.ctr.Ctr(ctx, "k8s.io", "tasks", "exec", "--fifo-dir", filepath.Join(h.ctr.Dir, "fifo"),
		"--exec-id", fmt.Sprint("probe", time.Now().UnixNano()), id, "cat", path)
	return openOutcome(res.ExitCode, res.Stderr)
}

func containerID(b testing.TB, p *corev1.Pod) string {
	b.Helper()
	for _, s := range p.Status.ContainerStatuses {
		if _, id, ok := strings.Cut(s.ContainerID, "://"); ok {
			return id
		}
	}
	b.Fatalf("pod %s has no container ID: %+v", p.Name, p.Status.ContainerStatuses)
	return ""
}

// attachWatch notes when each step of an attachment was first seen:
// watches on the namespace's attachments and pods, and hotgpud's ledger.
type attachWatch struct {
	h    *hotgpuCluster
	dyn  dynamic.Interface
	mu   sync.Mutex
	cond *sync.Cond
	at   map[string]time.Time
	pods map[string]*corev1.Pod // the last seen of each
}

func startAttachWatch(b *testing.B, h *hotgpuCluster) *attachWatch {
	b.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", h.AdminKubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // the client must not add its own waits
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	w := &attachWatch{h: h, at: map[string]time.Time{}, pods: map[string]*corev1.Pod{}}
	w.cond = sync.NewCond(&w.mu)
	if w.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	pods, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	atts, err := w.dyn.Resource(hotgpuv1.Resource).Namespace("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	go w.follow(pods, w.onPod)
	go w.follow(atts, w.onAttachment)
	go w.pollLedger(ctx)
	return w
}

func (w *attachWatch) follow(wi watch.Interface, on func(watch.EventType, runtime.Object)) {
	for ev := range wi.ResultChan() {
		on(ev.Type, ev.Object)
	}
}

// mark notes key's first sighting.
func (w *attachWatch) mark(key string, when time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.at[key]; !ok {
		w.at[key] = when
		w.cond.Broadcast()
	}
}

// forget drops key, to be seen again.
func (w *attachWatch) forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.at, key)
}

// wait blocks until key is seen (a minute at most) and returns when it was.
func (w *attachWatch) wait(b *testing.B, key string) time.Time {
	b.Helper()
	timeout := time.AfterFunc(time.Minute, func() { w.mark("timeout/"+key, time.Now()) })
	defer timeout.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if t, ok := w.at[key]; ok {
			return t
		}
		if _, ok := w.at["timeout/"+key]; ok {
			b.Fatalf("never saw %s; saw %v", key, w.at)
		}
		w.cond.Wait()
	}
}

func (w *attachWatch) onPod(t watch.EventType, obj runtime.Object) {
	now := time.Now()
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := "pod/" + p.Name + "/"
	w.mu.Lock()
	w.pods[p.Name] = p
	w.mu.Unlock()
	w.mark(key+"added", now)
	if p.Status.Phase == corev1.PodRunning {
		w.mark(key+"running", now)
	}
	if p.DeletionTimestamp != nil {
		w.mark(key+"deleting", now)
	}
	if t == watch.Deleted {
		w.mark(key+"deleted", now)
	}
}

func (w *attachWatch) onAttachment(t watch.EventType, obj runtime.Object) {
	now := time.Now()
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := "att/" + u.GetName() + "/"
	if u.GetLabels()[hotgpuv1.NodeLabel] != "" {
		w.mark(key+"claimed", now)
	}
	if phase, _, _ := unstructured.NestedString(u.Object, "status", "phase"); phase == string(hotgpuv1.Attached) {
		w.mark(key+"attached", now)
		gpus, _, _ := unstructured.NestedSlice(u.Object, "status", "gpus")
		if len(gpus) == 1 {
			idx, _, _ := unstructured.NestedInt64(gpus[0].(map[string]any), "index")
			w.mark(fmt.Sprintf("%sgpu/%d", key, idx), now)
		}
	}
	if t == watch.Deleted {
		w.mark(key+"deleted", now)
	}
}

// pollLedger reads hotgpud's ledger every 5 ms: when a move into the target
// began (the grant's own Since), and when the target's GPU was released.
func (w *attachWatch) pollLedger(ctx context.Context) {
	held := map[int]bool{}
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		gpus, _ := w.h.api.GPUs(rctx)
		cancel()
		now := time.Now()
		for _, g := range gpus {
			gr := g.Grant
			switch {
			case gr != nil && gr.Reason == ledger.Attach && gr.Holder.PodName == "bench-target":
				held[g.Index] = true
				w.mark("ledger/"+gr.Holder.Realises+"/moved", gr.Since)
				if gr.State == ledger.Active {
					w.mark("ledger/"+gr.Holder.Realises+"/active", now)
				}
			case held[g.Index]:
				delete(held, g.Index)
				w.mark(fmt.Sprintf("ledger/%d/released", g.Index), now)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holderSteps records when the holder's container was created (containerd's
// record) and when its pod's status said Running.
func (w *attachWatch) holderSteps(b *testing.B, name string, tl *timeline) {
	b.Helper()
	holder := "gpuatt-holder-" + name
	tl.add("running", w.wait(b, "pod/"+holder+"/running").Sub(tl.t0))
	w.mu.Lock()
	p := w.pods[holder]
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := w.h.ctr.Ctr(ctx, "k8s.io", "containers", "info", containerID(b, p))
	if err != nil {
		b.Fatal(err)
	}
	var info struct{ CreatedAt time.Time }
	if err := json.Unmarshal([]byte(res.Stdout), &info); err != nil || info.CreatedAt.IsZero() {
		b.Fatalf("ctr containers info: %v\n%s", err, res.Stdout)
	}
	tl.add("nri", info.CreatedAt.Sub(tl.t0))
}

// attach creates attachment name (1 GPU for bench-target), waits until it
// is Attached, records the steps and returns the GPU's index.
func (w *attachWatch) attach(b *testing.B, name string, tl *timeline) string {
	b.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": hotgpuv1.SchemeGroupVersion.String(), "kind": hotgpuv1.Kind.Kind,
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     map[string]any{"podName": "bench-target", "count": int64(1)},
	}}
	if _, err := w.dyn.Resource(hotgpuv1.Resource).Namespace("default").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	tl.t0 = t0
	holder := "gpuatt-holder-" + name
	tl.add("claimed", w.wait(b, "att/"+name+"/claimed").Sub(t0))
	tl.add("holder", w.wait(b, "pod/"+holder+"/added").Sub(t0))
	tl.add("attached", w.wait(b, "att/"+name+"/attached").Sub(t0))
	w.mu.Lock()
	uid := string(w.pods[holder].UID)
	w.mu.Unlock()
	tl.add("moved", w.wait(b, "ledger/"+uid+"/moved").Sub(t0))
	tl.add("active", w.wait(b, "ledger/"+uid+"/active").Sub(t0))
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.at {
		if idx, ok := strings.CutPrefix(k, "att/"+name+"/gpu/"); ok {
			return idx
		}
	}
	b.Fatalf("attachment %s is Attached without one GPU in its status", name)
	return ""
}

// detach deletes attachment name and records when its GPU was released
// in the ledger.
func (w *attachWatch) detach(b *testing.B, name, gpu string, tl *timeline) {
	b.Helper()
	w.forget("ledger/" + gpu + "/released")
	if err := w.dyn.Resource(hotgpuv1.Resource).Namespace("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	tl.t0 = time.Now()
	tl.add("released", w.wait(b, "ledger/"+gpu+"/released").Sub(tl.t0))
}
