package integration

import (
	"context"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHotgpuOnCluster deploys hotgpu as users do (image archive, kubectl
// apply -k deploy/ through an overlay, the DaemonSet's pod on simulated
// GPUs) and proves what the scheduler sees, through the device plugin and
// the DRA driver. The subtests share the cluster and run in order; each
// leaves the node with 8 allocatable GPUs and only the Deployment of
// "deployment" running.
func TestHotgpuOnCluster(t *testing.T) {
	h := deployHotgpu(t)
	run := func(name string, f func(t *testing.T)) {
		start := time.Now()
		if !t.Run(name, f) {
			t.FailNow()
		}
		t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
	}
	run("capacity", func(t *testing.T) {
		c, a, err := h.nodeGPUs(t)
		if err != nil || c != 8 || a != 8 {
			t.Fatalf("node nvidia.com/gpu capacity %d allocatable %d (%v), want 8 and 8", c, a, err)
		}
	})
	run("attach-withdraws-from-scheduler", func(t *testing.T) { testAttachWithdraws(t, h) })
	run("deployment", func(t *testing.T) { testDeployment(t, h) })
	run("xid", func(t *testing.T) { testUnhealthy(t, h) })
	run("daemonset-pod-recreated", func(t *testing.T) { testDaemonRestart(t, h) })
	run("eviction", func(t *testing.T) { testEviction(t, h) })
	run("dra-claim", func(t *testing.T) { testDRAOnDaemonSet(t, h) })
	run("dra-slice-policy", func(t *testing.T) { testResourceSlicePolicy(t, h) })
	run("dra-refused-claim-status", func(t *testing.T) { testDRARefusalStatus(t, h) })
}

// testAttachWithdraws: a GPU attached live by the node CLI leaves the
// node's allocatable, so a pod asking for all 8 stays Pending with the
// scheduler's reason, and runs once the GPU is detached.
func testAttachWithdraws(t *testing.T, h *hotgpuCluster) {
	createPod(t, h.Cluster, busyboxPod("idle", 0))
	defer deletePod(t, h.Cluster, "default", "idle")
	start := time.Now()
	h.hotgpu(t, "attach", "--pod", "default/idle", "--count", "1")
	if got := h.visibleGPUs(t, "default", "idle"); len(got) != 1 {
		t.Fatalf("idle sees GPUs %v after attaching one", got)
	}
	h.waitAllocatable(t, 7, "the attached GPU withdrawn")
	t.Logf("attach -> node allocatable 7 in %s", time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	if err := h.Client().Create(ctx, "/api/v1/namespaces/default/pods", busyboxPod("big", 8)); err != nil {
		t.Fatal(err)
	}
	defer deletePod(t, h.Cluster, "default", "big")
	eventually(t, time.Minute, "the scheduler to refuse big for lack of GPUs", func() (bool, string) {
		p, err := getPod(t, h.Cluster, "default", "big")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return strings.Contains(c.Message, "Insufficient nvidia.com/gpu"), c.Message
			}
		}
		return false, string(p.Status.Phase) + " " + podConditions(p)
	})
	if p, _ := getPod(t, h.Cluster, "default", "big"); p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
		t.Fatalf("big is %s on %q, want Pending and unscheduled", p.Status.Phase, p.Spec.NodeName)
	}

	h.hotgpu(t, "detach", "--pod", "default/idle", "--all")
	h.waitAllocatable(t, 8, "the detached GPU back")
	waitPodRunning(t, h.Cluster, "default", "big")
	if got := h.visibleGPUs(t, "default", "big"); len(got) != 8 {
		t.Fatalf("big sees GPUs %v, want all 8", got)
	}
	if got := h.visibleGPUs(t, "default", "idle"); len(got) != 0 {
		t.Fatalf("idle still sees GPUs %v after detach", got)
	}
}

const gpuDeployment = "gpu2"

// testDeployment: a Deployment asking 2 GPUs is scheduled and runs, its
// container sees exactly the two GPUs the ledger gives its pod, and
// kubectl describe node shows them allocated.
func testDeployment(t *testing.T, h *hotgpuCluster) {
	replicas := int32(1)
	labels := map[string]string{"app": gpuDeployment}
	pod := busyboxPod(gpuDeployment, 2)
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: gpuDeployment, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	if err := h.Client().Create(context.Background(), "/apis/apps/v1/namespaces/default/deployments", d); err != nil {
		t.Fatal(err)
	}
	p := h.deploymentPod(t, "")
	visible, held := h.visibleGPUs(t, "default", p.Name), h.heldBy(t, "default", p.Name)
	if len(visible) != 2 || !sameGPUs(visible, held) {
		t.Fatalf("pod %s sees GPUs %v, the ledger holds %v for it: want the same two", p.Name, visible, held)
	}
	out, err := h.Kubectl(context.Background(), "describe", "node", h.NodeName)
	if err != nil {
		t.Fatal(err)
	}
	_, allocated, _ := strings.Cut(out, "Allocated resources:")
	if !regexp.MustCompile(`(?m)^\s+nvidia\.com/gpu\s+2\s+2\s*$`).MatchString(allocated) {
		t.Fatalf("kubectl describe node does not show 2 nvidia.com/gpu allocated:\n%s", allocated)
	}
}

// deploymentPod waits for the Deployment's one Running pod other than notUID.
func (h *hotgpuCluster) deploymentPod(t testing.TB, notUID string) corev1.Pod {
	t.Helper()
	var found corev1.Pod
	eventually(t, time.Minute, "the "+gpuDeployment+" Deployment's pod Running", func() (bool, string) {
		pods, err := h.pods(t, "default", "app="+gpuDeployment)
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range pods {
			if string(p.UID) != notUID && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				found = p
				return true, ""
			}
			states = append(states, p.Name+" "+string(p.Status.Phase)+" "+podConditions(&p))
		}
		return false, strings.Join(states, "; ")
	})
	return found
}

func (h *hotgpuCluster) pods(t testing.TB, ns, selector string) ([]corev1.Pod, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list corev1.PodList
	err := h.Client().Get(ctx, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+url.QueryEscape(selector), &list)
	return list.Items, err
}

// testUnhealthy: a GPU marked unhealthy (as an Xid does) leaves the node's
// allocatable, not its capacity, and comes back when healthy again.
func testUnhealthy(t *testing.T, h *hotgpuCluster) {
	free := h.gpuNotHeldBy(t, h.deploymentPod(t, "").Name)
	h.hotgpu(t, "health", "set", strconv.Itoa(free), "unhealthy", "--reason", "simulated Xid 79 (fallen off the bus)")
	h.waitAllocatable(t, 7, "the unhealthy GPU withdrawn")
	if c, _, _ := h.nodeGPUs(t); c != 8 {
		t.Fatalf("capacity %d with one GPU unhealthy, want 8", c)
	}
	h.hotgpu(t, "health", "set", strconv.Itoa(free), "healthy")
	h.waitAllocatable(t, 8, "the recovered GPU back")
}

// gpuNotHeldBy returns the index of a GPU a pod does not hold.
func (h *hotgpuCluster) gpuNotHeldBy(t testing.TB, pod string) int {
	t.Helper()
	held := h.heldBy(t, "default", pod)
	for i := 0; i < 8; i++ {
		if !slices.Contains(held, i) {
			return i
		}
	}
	t.Fatalf("%s holds every GPU", pod)
	return -1
}

// testDaemonRestart: the DaemonSet's pod deleted and re-created by its
// controller is hotgpud restarting the Kubernetes way: the running GPU pod
// keeps its container and GPUs, the ledger (on its host path) survives, the
// new hotgpud registers again and new GPU pods are admitted.
func testDaemonRestart(t *testing.T, h *hotgpuCluster) {
	before := h.deploymentPod(t, "")
	gpus := h.visibleGPUs(t, "default", before.Name)
	regs := h.registrations(t)
	old := h.waitDaemonPod(t, "")
	if err := h.Client().Delete(context.Background(), "/api/v1/namespaces/hotgpu-system/pods/"+old.Name); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.waitDaemonPod(t, string(old.UID))
	eventually(t, time.Minute, "the new hotgpud's registration with kubelet", func() (bool, string) {
		n := h.registrations(t)
		return n > regs, strconv.Itoa(n) + " registrations"
	})
	h.waitAllocatable(t, 8, "re-registration")
	t.Logf("DaemonSet pod deleted -> new pod Ready and registered -> allocatable 8 in %s", time.Since(start).Round(time.Millisecond))

	after := h.deploymentPod(t, "")
	if after.UID != before.UID || after.Status.ContainerStatuses[0].RestartCount != 0 ||
		after.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID {
		t.Fatalf("the GPU pod changed across hotgpud's restart: %s %s -> %s %s", before.Name, before.UID, after.Name, after.UID)
	}
	if got := h.visibleGPUs(t, "default", after.Name); !slices.Equal(got, gpus) {
		t.Fatalf("pod %s sees GPUs %v after hotgpud's restart, %v before", after.Name, got, gpus)
	}
	if held := h.heldBy(t, "default", after.Name); !sameGPUs(gpus, held) {
		t.Fatalf("the new hotgpud's ledger holds %v for %s, want %v", held, after.Name, gpus)
	}
	// The new plugin allocates: a one-GPU pod is admitted and gets a GPU the
	// running pod does not have.
	one := createPod(t, h.Cluster, busyboxPod("one", 1))
	got := h.visibleGPUs(t, "default", one.Name)
	deletePod(t, h.Cluster, "default", one.Name)
	if len(got) != 1 || slices.Contains(gpus, got[0]) {
		t.Fatalf("pod one sees GPUs %v; %s holds %v", got, after.Name, gpus)
	}
	pods, err := h.pods(t, "default", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodFailed {
			t.Errorf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message)
		}
	}
}

// registrations counts kubelet's device-plugin registrations of nvidia.com/gpu.
func (h *hotgpuCluster) registrations(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(h.LogPath("kubelet"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "Got registration request from device plugin") && strings.Contains(line, "nvidia.com/gpu") {
			n++
		}
	}
	return n
}

// testEviction: draining the node evicts the GPU pod and frees its GPUs in
// the ledger; its replacement runs with two GPUs after uncordon.
func testEviction(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	evicted := h.deploymentPod(t, "")
	if len(h.heldBy(t, "default", evicted.Name)) != 2 {
		t.Fatalf("the ledger does not hold 2 GPUs for %s before the drain", evicted.Name)
	}
	defer func() { _, _ = h.Kubectl(ctx, "uncordon", h.NodeName) }()
	if _, err := h.Kubectl(ctx, "drain", h.NodeName, "--pod-selector", "app="+gpuDeployment,
		"--ignore-daemonsets", "--grace-period", "1", "--timeout", "60s"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The ledger lets go at containerd's RemovePodSandbox, which comes with
	// kubelet's container GC (every minute), not at the eviction.
	eventually(t, 3*time.Minute, "the ledger to free "+evicted.Name+"'s GPUs", func() (bool, string) {
		held := h.heldBy(t, "default", evicted.Name)
		return len(held) == 0, "holds " + strconv.Itoa(len(held))
	})
	t.Logf("drained -> ledger freed the evicted pod's GPUs in %s", time.Since(start).Round(time.Millisecond))
	if _, err := h.Kubectl(ctx, "uncordon", h.NodeName); err != nil {
		t.Fatal(err)
	}
	p := h.deploymentPod(t, string(evicted.UID))
	if got := h.visibleGPUs(t, "default", p.Name); len(got) != 2 {
		t.Fatalf("replacement %s sees GPUs %v, want 2", p.Name, got)
	}
}

// sameGPUs reports whether visible device numbers and held indexes name the
// same GPUs (the simulated GPUs' minor numbers are their indexes).
func sameGPUs(visible []string, held []int) bool {
	if len(visible) != len(held) {
		return false
	}
	h := make([]string, len(held))
	for i, n := range held {
		h[i] = strconv.Itoa(n)
	}
	v := slices.Clone(visible)
	sort.Strings(v)
	sort.Strings(h)
	return slices.Equal(v, h)
}
