package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hotgpu/hotgpu/integration/cluster"
	"github.com/hotgpu/hotgpu/integration/harness"
)

// startCluster starts a private containerd and a single-node cluster in
// front of it; both go when t ends (or earlier with c.Cleanup).
func startCluster(t *testing.T, labels map[string]string) (*cluster.Cluster, *harness.Containerd) {
	t.Helper()
	bins := harness.Deps(t)
	if testing.Short() {
		t.Skip("-short: the cluster suite builds the control plane once (~15 min) and runs ~1 min")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	kbins, took, err := cluster.BuildDeps(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	ctr := harness.StartContainerd(t, harness.Options{Bins: bins})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Bins: kbins, Containerd: ctr, NodeLabels: labels})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster deps in %s; cluster up, node Ready and schedulable in %s",
		took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.LogTails(40))
		}
		if err := c.Cleanup(); err != nil {
			t.Errorf("failed to clean up the cluster: %v", err)
		}
	})
	return c, ctr
}

// busyboxPod is a pod that sleeps, on the pod network unless hostNetwork.
func busyboxPod(name string, gpus int64) *corev1.Pod {
	ctr := corev1.Container{
		Name: "main", Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
		Command: []string{"sleep", "86400"},
	}
	if gpus > 0 {
		ctr.Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)}
	}
	grace := int64(1)
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{ctr}, TerminationGracePeriodSeconds: &grace},
	}
}

func getPod(t testing.TB, c *cluster.Cluster, ns, name string) (*corev1.Pod, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p corev1.Pod
	err := c.Client().Get(ctx, "/api/v1/namespaces/"+ns+"/pods/"+name, &p)
	return &p, err
}

// createPod creates a pod and waits until it runs.
func createPod(t testing.TB, c *cluster.Cluster, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Client().Create(ctx, "/api/v1/namespaces/"+p.Namespace+"/pods", p); err != nil {
		t.Fatal(err)
	}
	return waitPodRunning(t, c, p.Namespace, p.Name)
}

func waitPodRunning(t testing.TB, c *cluster.Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, time.Minute, "pod "+ns+"/"+name+" Running", func() (bool, string) {
		p, err := getPod(t, c, ns, name)
		if err != nil {
			return false, err.Error()
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + podConditions(p)
	})
	return pod
}

func podConditions(p *corev1.Pod) string {
	var b strings.Builder
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			b.WriteString(string(c.Type) + ": " + c.Reason + " " + c.Message + "; ")
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			b.WriteString(s.Name + " waiting: " + s.State.Waiting.Reason + " " + s.State.Waiting.Message + "; ")
		}
	}
	return b.String()
}

func deletePod(t testing.TB, c *cluster.Cluster, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Client().Delete(ctx, "/api/v1/namespaces/"+ns+"/pods/"+name); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "pod "+ns+"/"+name+" gone", func() (bool, string) {
		_, err := getPod(t, c, ns, name)
		return errors.Is(err, cluster.ErrNotFound), "still there"
	})
}

// hostTraces are host paths a Kubernetes node writes by default; the
// cluster must leave each exactly as it found it.
var hostTraces = []string{
	"/etc/kubernetes", "/etc/cni", "/var/lib/kubelet", "/var/lib/cni", "/var/log/pods",
	"/var/log/containers", "/var/run/netns", "/var/run/kubernetes", "/usr/libexec/kubernetes",
	"/opt/cni", "/root/.kube",
}

func snapshotHost(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range hostTraces {
		var names []string
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil {
				names = append(names, path)
			}
			return nil
		})
		out[p] = strings.Join(names, "\n")
	}
	// The ptp CNI plugin turns forwarding on.
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	out["ip_forward"] = string(b)
	return out
}

// TestClusterBasics: the cluster comes up with its node Ready, a plain pod
// runs on the pod network, RBAC holds for a non-admin user, and teardown
// leaves nothing behind.
func TestClusterBasics(t *testing.T) {
	before := snapshotHost(t)
	c, _ := startCluster(t, nil)

	out, err := c.Kubectl(context.Background(), "get", "node", c.NodeName, "-o",
		`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "True " + c.NodeIP; out != want {
		t.Fatalf("node Ready and InternalIP: got %q, want %q", out, want)
	}

	start := time.Now()
	pod := createPod(t, c, busyboxPod("plain", 0))
	t.Logf("plain pod create -> Running in %s", time.Since(start).Round(time.Millisecond))
	if pod.Spec.NodeName != c.NodeName || pod.Status.PodIP == "" || pod.Status.PodIP == c.NodeIP {
		t.Fatalf("pod on node %q with IP %q: want node %s and its own pod IP", pod.Spec.NodeName, pod.Status.PodIP, c.NodeName)
	}
	ctx := context.Background()
	// kubectl exec goes API server -> kubelet (its serving cert, webhook
	// authn/z) -> CRI; the pod has the address CNI gave it.
	if out, err := c.Kubectl(ctx, "exec", "plain", "--", "ip", "-4", "addr"); err != nil || !strings.Contains(out, " "+pod.Status.PodIP+"/") {
		t.Fatalf("exec ip addr in the pod: %v\n%s (want its pod IP %s)", err, out, pod.Status.PodIP)
	}

	// A non-admin user is who RBAC says: nothing until bound.
	kc, err := c.UserKubeconfig("alice", "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "--kubeconfig", kc, "auth", "can-i", "list", "pods"); err == nil || strings.TrimSpace(out) != "no" {
		t.Fatalf("alice can list pods before any binding: %q, %v", out, err)
	}
	if _, err := c.Kubectl(ctx, "create", "rolebinding", "alice-view", "--clusterrole", "view", "--group", "team-a"); err != nil {
		t.Fatal(err)
	}
	out, err = c.Kubectl(ctx, "--kubeconfig", kc, "get", "pods", "-o", "name")
	if err != nil || strings.TrimSpace(out) != "pod/plain" {
		t.Fatalf("alice (group team-a, bound to view) lists pods: %q, %v", out, err)
	}
	if _, err := c.Kubectl(ctx, "--kubeconfig", kc, "delete", "pod", "plain"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("alice deletes a pod with only view: %v", err)
	}

	pids := c.Pids()
	if err := c.Cleanup(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("process %d still runs after teardown", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %s left behind: %v", c.Dir, err)
	}
	after := snapshotHost(t)
	for _, p := range append(hostTraces, "ip_forward") {
		if before[p] != after[p] {
			t.Errorf("host path %s changed by the cluster:\nbefore:\n%s\nafter:\n%s", p, before[p], after[p])
		}
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
