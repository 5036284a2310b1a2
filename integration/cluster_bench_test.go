package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hotgpu/hotgpu/integration/cluster"
)

// BenchmarkClusterPodStart measures pod create -> Running as a user sees it
// (API server, scheduler, kubelet, containerd), with one GPU (device plugin
// Allocate, CDI and NRI injection) and without, interleaved in one run on
// the cluster with hotgpu deployed by its DaemonSet, and with one GPU by
// annotation in team-a (NRI; its charge pod created before the container
// gets the GPU). It reports each variant's median in ms; polling the API
// every 10 ms bounds the resolution.
//
//	go test -run '^$' -bench ClusterPodStart -benchtime 10x ./integration/
func BenchmarkClusterPodStart(b *testing.B) {
	h := deployHotgpu(b)
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}
	if err := h.Client().Create(context.Background(), "/api/v1/namespaces", ns); err != nil {
		b.Fatal(err)
	}
	var plain, gpu, ann []time.Duration
	i := 0
	for b.Loop() {
		plain = append(plain, podStart(b, h.Cluster, busyboxPod(fmt.Sprintf("plain-%d", i), 0)))
		gpu = append(gpu, podStart(b, h.Cluster, busyboxPod(fmt.Sprintf("gpu-%d", i), 1)))
		p := busyboxPod(fmt.Sprintf("ann-%d", i), 0)
		p.Namespace, p.Annotations = "team-a", map[string]string{"gpus.hotgpu.dev/container.main": "1"}
		ann = append(ann, podStart(b, h.Cluster, p))
		i++
	}
	b.ReportMetric(median(plain), "plain-p50-ms")
	b.ReportMetric(median(gpu), "gpu1-p50-ms")
	b.ReportMetric(median(ann), "annotation1-p50-ms")
}

// podStart creates a pod, returns how long until it was Running, and
// deletes it (not timed).
func podStart(b *testing.B, c *cluster.Cluster, p *corev1.Pod) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	if err := c.Client().Create(ctx, "/api/v1/namespaces/"+p.Namespace+"/pods", p); err != nil {
		b.Fatal(err)
	}
	took := pollUntil(b, time.Minute, "pod "+p.Name+" Running", func() bool {
		got, err := getPod(b, c, p.Namespace, p.Name)
		return err == nil && got.Status.Phase == corev1.PodRunning
	}, start)
	b.StopTimer()
	deletePod(b, c, p.Namespace, p.Name)
	b.StartTimer()
	return took
}

// BenchmarkDaemonSetRestart measures hotgpud restarting the Kubernetes way:
// the DaemonSet's pod deleted, then, from the moment its replacement
// exists: replacement Running, plugin registered with kubelet, node
// allocatable nvidia.com/gpu back to 8 (what the scheduler sees).
//
//	go test -run '^$' -bench DaemonSetRestart -benchtime 5x ./integration/
func BenchmarkDaemonSetRestart(b *testing.B) {
	h := deployHotgpu(b)
	var running, registered, allocatable []time.Duration
	for b.Loop() {
		old := h.waitDaemonPod(b, "")
		regs := h.registrations(b)
		if err := h.Client().Delete(context.Background(), "/api/v1/namespaces/hotgpu-system/pods/"+old.Name); err != nil {
			b.Fatal(err)
		}
		var created time.Time
		var pod corev1.Pod
		pollUntil(b, time.Minute, "the replacement pod", func() bool {
			pods, err := h.daemonPods(b)
			for _, p := range pods {
				if err == nil && p.UID != old.UID {
					created, pod = time.Now(), p
					return true
				}
			}
			return false
		}, time.Now())
		running = append(running, pollUntil(b, time.Minute, "the replacement Running", func() bool {
			got, err := getPod(b, h.Cluster, "hotgpu-system", pod.Name)
			return err == nil && got.Status.Phase == corev1.PodRunning
		}, created))
		registered = append(registered, pollUntil(b, time.Minute, "registration", func() bool {
			return h.registrations(b) > regs
		}, created))
		allocatable = append(allocatable, pollUntil(b, time.Minute, "allocatable 8", func() bool {
			_, a, err := h.nodeGPUs(b)
			return err == nil && a == 8
		}, created))
		b.StopTimer()
		h.waitDaemonPod(b, string(old.UID))
		b.StartTimer()
	}
	b.ReportMetric(median(running), "running-p50-ms")
	b.ReportMetric(median(registered), "registered-p50-ms")
	b.ReportMetric(median(allocatable), "allocatable-p50-ms")
}

// pollUntil polls ok every 10 ms and returns the time from since until it held.
func pollUntil(b testing.TB, timeout time.Duration, what string, ok func() bool, since time.Time) time.Duration {
	b.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return time.Since(since)
		}
	}
	b.Fatal(errors.New("timed out waiting for " + what))
	return 0
}

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / 1e6
}
