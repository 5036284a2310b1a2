package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/integration/cluster"
)

// TestGPUAttachments is hot-mount the Kubernetes way on the real cluster:
// hotgpu deployed by deploy/ (CRD, RBAC, admission policy, the DaemonSet
// whose hotgpud is the node agent), a non-admin user with the aggregated
// edit role, and the kubectl plugin. Subtests share the cluster, in order.
func TestGPUAttachments(t *testing.T) {
	h := deployHotgpu(t)
	k := newTenants(t, h)
	run := func(name string, f func(t *testing.T)) {
		start := time.Now()
		if !t.Run(name, f) {
			t.FailNow()
		}
		t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
	}
	run("crd-validation", func(t *testing.T) { testCRDValidation(t, h) })
	run("attach-as-edit-user", func(t *testing.T) { testAttachAsTenant(t, h, k) })
	run("forbidden-in-other-namespace", func(t *testing.T) { testForbidden(t, h, k) })
	run("node-agent-policy", func(t *testing.T) { testAgentPolicy(t, h) })
	run("quota-and-holder", func(t *testing.T) { testQuotaAndHolder(t, h, k) })
	run("scheduler-sees-attachment", func(t *testing.T) { testAttachmentWithdraws(t, h, k) })
	run("holder-near-target", func(t *testing.T) { testAttachNearTarget(t, h, k) })
	run("pod-deleted", func(t *testing.T) { testPodDeleted(t, h, k) })
	run("hotgpud-killed", func(t *testing.T) { testAgentRestart(t, h, k) })
}

// tenants: namespaces team-a and team-b, and user alice bound to the
// built-in edit role in team-a only.
type tenants struct {
	alice  string // kubeconfig
	plugin string // kubectl-hotgpu, built by make build
	home   string
}

func newTenants(t *testing.T, h *hotgpuCluster) *tenants {
	t.Helper()
	ctx := context.Background()
	for _, ns := range []string{"team-a", "team-b"} {
		obj := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if err := h.Client().Create(ctx, "/api/v1/namespaces", obj); err != nil {
			t.Fatal(err)
		}
	}
	rb := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "alice-edit", Namespace: "team-a"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "alice"}},
	}
	if err := h.Client().Create(ctx, "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings", rb); err != nil {
		t.Fatal(err)
	}
	alice, err := h.UserKubeconfig("alice")
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(h.Dir, "alice-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	k := &tenants{alice: alice, plugin: filepath.Join(filepath.Dir(h.cli), "kubectl-hotgpu"), home: home}
	// The aggregation controller adds the gpuattachments rules to edit.
	eventually(t, time.Minute, "alice may create gpuattachments in team-a", func() (bool, string) {
		out, err := h.Kubectl(ctx, "--kubeconfig", alice, "auth", "can-i", "create", "gpuattachments.hotgpu.dev", "-n", "team-a")
		return err == nil && strings.TrimSpace(out) == "yes", out + errString(err)
	})
	return k
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// hotgpu runs kubectl-hotgpu as alice.
func (k *tenants) hotgpu(args ...string) (string, error) {
	cmd := exec.Command(k.plugin, append(args, "--kubeconfig", k.alice, "--cache-dir", filepath.Join(k.home, "cache"))...)
	cmd.Env = append(os.Environ(), "HOME="+k.home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (k *tenants) mustHotgpu(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.hotgpu(args...)
	if err != nil {
		t.Fatalf("kubectl hotgpu %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func teamPod(name string, gpus int64) *corev1.Pod {
	p := busyboxPod(name, gpus)
	p.Namespace = "team-a"
	return p
}

// attachments lists a namespace's GPUAttachments as the admin.
func attachments(t testing.TB, c *cluster.Cluster, ns string) []hotgpuv1.GPUAttachment {
	t.Helper()
	var list hotgpuv1.GPUAttachmentList
	if err := c.Client().Get(context.Background(), "/apis/hotgpu.dev/v1alpha1/namespaces/"+ns+"/gpuattachments", &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

const attPath = "/apis/hotgpu.dev/v1alpha1/namespaces/default/gpuattachments"

// testCRDValidation: the API server itself refuses bad attachments (the
// CRD's OpenAPI and CEL rules), before any agent sees them.
func testCRDValidation(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	att := func(name string, spec string) map[string]any {
		var s map[string]any
		if err := json.Unmarshal([]byte(spec), &s); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"apiVersion": "hotgpu.dev/v1alpha1", "kind": "GPUAttachment",
			"metadata": map[string]any{"name": name}, "spec": s}
	}
	for _, tc := range []struct{ name, spec, want string }{
		{"both", `{"podName":"p","count":1,"gpus":["0"]}`, "exactly one of count or gpus"},
		{"neither", `{"podName":"p"}`, "exactly one of count or gpus"},
		{"nine", `{"podName":"p","count":9}`, "should be less than or equal to 8"},
		{"zero", `{"podName":"p","count":0}`, "should be greater than or equal to 1"},
		{"policy", `{"podName":"p","count":1,"detachPolicy":"Later"}`, "Unsupported value"},
	} {
		err := h.Client().Create(ctx, attPath, att(tc.name, tc.spec))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: create gave %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if err := h.Client().Create(ctx, attPath, att("ok", `{"podName":"nosuchpod","count":1}`)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Client().Delete(ctx, attPath+"/ok") }()
	var got hotgpuv1.GPUAttachment
	if err := h.Client().Get(ctx, attPath+"/ok", &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.DetachPolicy != hotgpuv1.Graceful {
		t.Errorf("detachPolicy defaulted to %q, want Graceful", got.Spec.DetachPolicy)
	}
	for _, tc := range []struct{ name, patch, want string }{
		{"count", `{"spec":{"count":2}}`, "count is immutable"},
		{"pod", `{"spec":{"podName":"other"}}`, "podName is immutable"},
		{"count-to-gpus", `{"spec":{"count":null,"gpus":["1"]}}`, "spec is immutable"},
	} {
		_, err := h.Kubectl(ctx, "patch", "gpuattachment", "ok", "-n", "default", "--type", "merge", "-p", tc.patch)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: patch gave %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := h.Kubectl(ctx, "patch", "gpuattachment", "ok", "-n", "default", "--type", "merge", "-p", `{"spec":{"detachPolicy":"Force"}}`); err != nil {
		t.Errorf("detachPolicy may change: %v", err)
	}
}

// testAttachAsTenant: alice, with only the edit role in team-a, attaches a
// GPU to her running pod with kubectl hotgpu attach --wait; the container
// sees it and kubectl get gpuatt shows it Attached.
func testAttachAsTenant(t *testing.T, h *hotgpuCluster, k *tenants) {
	createPod(t, h.Cluster, teamPod("notebook", 0))
	defer deletePod(t, h.Cluster, "team-a", "notebook")
	start := time.Now()
	out := k.mustHotgpu(t, "attach", "notebook", "-n", "team-a", "--count", "1", "--wait", "-o", "json")
	t.Logf("kubectl hotgpu attach --wait returned in %s", time.Since(start).Round(time.Millisecond))
	var att hotgpuv1.GPUAttachment
	if err := json.Unmarshal([]byte(out), &att); err != nil {
		t.Fatalf("attach -o json: %v\n%s", err, out)
	}
	if att.Status.Phase != hotgpuv1.Attached || len(att.Status.GPUs) != 1 || att.Status.NodeName != h.NodeName {
		t.Fatalf("attachment status %+v, want Attached with one GPU on %s", att.Status, h.NodeName)
	}
	visible, held := h.visibleGPUs(t, "team-a", "notebook"), h.heldBy(t, "team-a", "notebook")
	if len(visible) != 1 || !sameGPUs(visible, held) || held[0] != att.Status.GPUs[0].Index {
		t.Fatalf("notebook sees GPUs %v, the ledger holds %v, the status says %v", visible, held, att.Status.GPUs)
	}
	get, err := h.Kubectl(context.Background(), "--kubeconfig", k.alice, "get", "gpuatt", "-n", "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(get, "Attached") || !strings.Contains(get, "notebook") {
		t.Fatalf("kubectl get gpuatt:\n%s", get)
	}
	t.Logf("kubectl get gpuatt:\n%s", get)
	var ls struct {
		Attachments []hotgpuv1.GPUAttachment `json:"attachments"`
		Nodes       []json.RawMessage        `json:"nodes"`
	}
	out = k.mustHotgpu(t, "ls", "-n", "team-a", "-o", "json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	// alice may not list nodes: she sees her namespace's attachments only
	if len(ls.Attachments) != 1 || ls.Attachments[0].Status.Phase != hotgpuv1.Attached || len(ls.Nodes) != 0 {
		t.Fatalf("kubectl hotgpu ls -o json:\n%s", out)
	}
	k.mustHotgpu(t, "detach", "notebook", "-n", "team-a", "--all", "--wait")
	if got := h.visibleGPUs(t, "team-a", "notebook"); len(got) != 0 {
		t.Fatalf("notebook still sees GPUs %v after detach", got)
	}
	if got := h.heldBy(t, "team-a", "notebook"); len(got) != 0 {
		t.Fatalf("the ledger still holds %v for notebook after detach", got)
	}
}

// testForbidden: alice may not attach in team-b: the API server refuses
// and nothing is created.
func testForbidden(t *testing.T, h *hotgpuCluster, k *tenants) {
	p := busyboxPod("other", 0)
	p.Namespace = "team-b"
	createPod(t, h.Cluster, p)
	defer deletePod(t, h.Cluster, "team-b", "other")
	out, err := k.hotgpu("attach", "other", "-n", "team-b", "--count", "1")
	if err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("attach in team-b: %v\n%s\nwant Forbidden", err, out)
	}
	manifest := filepath.Join(k.home, "att.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: hotgpu.dev/v1alpha1\nkind: GPUAttachment\nmetadata: {name: x, namespace: team-b}\nspec: {podName: other, count: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = h.Kubectl(context.Background(), "--kubeconfig", k.alice, "create", "-f", manifest)
	if err == nil || !strings.Contains(err.Error(), `cannot create resource "gpuattachments"`) {
		t.Fatalf("kubectl create in team-b: %v %s, want Forbidden on gpuattachments", err, out)
	}
	if got := attachments(t, h.Cluster, "team-b"); len(got) != 0 {
		t.Fatalf("team-b has attachments %v", got)
	}
	if got := h.heldBy(t, "team-b", "other"); len(got) != 0 {
		t.Fatalf("the ledger holds %v for team-b/other", got)
	}
}

// testAgentPolicy: hotgpud's account alone may not write attachments: the
// admission policy wants the node name of a bound token, and only its own
// node's attachments.
func testAgentPolicy(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	manifest := filepath.Join(h.Dir, "agent-att.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: hotgpu.dev/v1alpha1\nkind: GPUAttachment\nmetadata: {name: mine, namespace: team-b, labels: {hotgpu.dev/node: "+h.NodeName+"}}\nspec: {podName: nosuchpod, count: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Kubectl(ctx, "create", "-f", manifest); err != nil {
		t.Fatal(out, err)
	}
	defer func() { _, _ = h.Kubectl(ctx, "delete", "-f", manifest, "--wait=false") }()
	for _, tc := range []struct {
		name, node, want string
	}{
		{"no-node", "", "not bound to a node"},
		{"other-node", "other-node", "belongs to another node"},
		{"own-node", h.NodeName, ""},
	} {
		kubeconfig := agentKubeconfig(t, h, tc.node)
		_, err := h.Kubectl(ctx, "--kubeconfig", kubeconfig, "label", "-n", "team-b", "gpuattachment", "mine", "x="+tc.name)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: the node's own agent may write its attachment: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: agent write gave %v, want refused with %q", tc.name, err, tc.want)
		}
	}
	// It creates and deletes attachments (a running pod's annotation): only
	// its own node's.
	other, own := agentKubeconfig(t, h, "other-node"), agentKubeconfig(t, h, h.NodeName)
	if _, err := h.Kubectl(ctx, "--kubeconfig", other, "delete", "-n", "team-b", "gpuattachment", "mine", "--wait=false"); err == nil ||
		!strings.Contains(err.Error(), "belongs to another node") {
		t.Errorf("another node's agent deleting the attachment: %v, want refused", err)
	}
	made := filepath.Join(h.Dir, "agent-made.yaml")
	if err := os.WriteFile(made, []byte("apiVersion: hotgpu.dev/v1alpha1\nkind: GPUAttachment\nmetadata: {name: made, namespace: team-b, labels: {hotgpu.dev/node: "+h.NodeName+"}}\nspec: {podName: nosuchpod, count: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Kubectl(ctx, "--kubeconfig", other, "create", "-f", made); err == nil || !strings.Contains(err.Error(), "may only write attachments labelled") {
		t.Errorf("another node's agent creating an attachment of this node: %v, want refused", err)
	}
	if out, err := h.Kubectl(ctx, "--kubeconfig", own, "create", "-f", made); err != nil {
		t.Errorf("the node's own agent creating its attachment: %v %s", err, out)
	}
	if out, err := h.Kubectl(ctx, "--kubeconfig", own, "delete", "-f", made, "--wait=false"); err != nil {
		t.Errorf("the node's own agent deleting its attachment: %v %s", err, out)
	}
}

// agentKubeconfig is the admin's kubeconfig impersonating hotgpud's service
// account, with the token's node name as user extra when node is set
// (kubectl 1.34 has no --as-user-extra flag; the kubeconfig field works).
func agentKubeconfig(t *testing.T, h *hotgpuCluster, node string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(h.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		u.Impersonate = "system:serviceaccount:hotgpu-system:hotgpud"
		if node != "" {
			u.ImpersonateUserExtra = map[string][]string{"authentication.kubernetes.io/node-name": {node}}
		}
	}
	path := filepath.Join(h.Dir, "kubeconfig-agent-"+node)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// testAttachmentWithdraws: while a GPU is attached through the API, a pod
// asking for all 8 is Pending (Insufficient nvidia.com/gpu); after kubectl
// hotgpu detach it runs.
func testAttachmentWithdraws(t *testing.T, h *hotgpuCluster, k *tenants) {
	createPod(t, h.Cluster, teamPod("idle", 0))
	defer deletePod(t, h.Cluster, "team-a", "idle")
	k.mustHotgpu(t, "attach", "idle", "-n", "team-a", "--count", "1", "--wait")
	h.waitAllocatable(t, 7, "the attached GPU withdrawn")
	ctx := context.Background()
	if err := h.Client().Create(ctx, "/api/v1/namespaces/default/pods", busyboxPod("big", 8)); err != nil {
		t.Fatal(err)
	}
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
	k.mustHotgpu(t, "detach", "idle", "-n", "team-a", "--all", "--wait")
	waitPodRunning(t, h.Cluster, "default", "big")
	if got := h.visibleGPUs(t, "default", "big"); len(got) != 8 {
		t.Fatalf("big sees GPUs %v, want all 8", got)
	}
	deletePod(t, h.Cluster, "default", "big")
	eventually(t, time.Minute, "big's GPUs released in the ledger", func() (bool, string) {
		held := h.heldBy(t, "default", "big")
		return len(held) == 0, fmt.Sprintf("held %v", held)
	})
}

// testPodDeleted: deleting the target pod deletes its attachment (owner
// reference; the agent's finalizer lets go once the container is gone) and
// frees the GPU in the ledger.
func testPodDeleted(t *testing.T, h *hotgpuCluster, k *tenants) {
	createPod(t, h.Cluster, teamPod("shortlived", 0))
	k.mustHotgpu(t, "attach", "shortlived", "-n", "team-a", "--count", "2", "--wait")
	if got := h.heldBy(t, "team-a", "shortlived"); len(got) != 2 {
		t.Fatalf("the ledger holds %v for shortlived, want 2 GPUs", got)
	}
	deletePod(t, h.Cluster, "team-a", "shortlived")
	eventually(t, time.Minute, "the attachment deleted with its pod", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 0, attachmentsString(atts)
	})
	eventually(t, time.Minute, "the GPUs freed in the ledger", func() (bool, string) {
		held := h.heldBy(t, "team-a", "shortlived")
		return len(held) == 0, fmt.Sprintf("held %v", held)
	})
	h.waitAllocatable(t, 8, "the freed GPUs back")
}

func attachmentsString(atts []hotgpuv1.GPUAttachment) string {
	var s []string
	for _, a := range atts {
		s = append(s, a.Name+" "+string(a.Status.Phase)+" "+a.Status.Message)
	}
	return strings.Join(s, "; ")
}

// killHotgpud kills -9 the DaemonSet's hotgpud process (found by its
// container's id in containerd's task list); kubelet restarts the container.
func (h *hotgpuCluster) killHotgpud(t *testing.T) {
	t.Helper()
	pod := h.waitDaemonPod(t, "")
	var id string
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == "hotgpud" {
			_, id, _ = strings.Cut(s.ContainerID, "://")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.ctr.Ctr(ctx, "k8s.io", "task", "ls")
	if err != nil || id == "" {
		t.Fatalf("hotgpud's container %q: %v", id, err)
	}
	for _, line := range strings.Split(out.Stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil || pid <= 1 {
				t.Fatalf("task line %q", line)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no task %s in:\n%s", id, out.Stdout)
}

// testAgentRestart: hotgpud killed -9 with an attachment to carry out, and
// again with one to undo, converges once kubelet restarts it.
func testAgentRestart(t *testing.T, h *hotgpuCluster, k *tenants) {
	createPod(t, h.Cluster, teamPod("resilient", 0))
	defer deletePod(t, h.Cluster, "team-a", "resilient")
	h.killHotgpud(t)
	k.mustHotgpu(t, "attach", "resilient", "-n", "team-a", "--count", "1")
	h.waitDaemonPod(t, "")
	eventually(t, 2*time.Minute, "the attachment made while hotgpud was down Attached", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 1 && atts[0].Status.Phase == hotgpuv1.Attached, attachmentsString(atts)
	})
	if got := h.visibleGPUs(t, "team-a", "resilient"); len(got) != 1 {
		t.Fatalf("resilient sees GPUs %v, want 1", got)
	}
	h.killHotgpud(t)
	k.mustHotgpu(t, "detach", "resilient", "-n", "team-a", "--all")
	h.waitDaemonPod(t, "")
	eventually(t, 2*time.Minute, "the attachment deleted while hotgpud was down gone", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 0, attachmentsString(atts)
	})
	if got := h.visibleGPUs(t, "team-a", "resilient"); len(got) != 0 {
		t.Fatalf("resilient still sees GPUs %v", got)
	}
	if got := h.heldBy(t, "team-a", "resilient"); len(got) != 0 {
		t.Fatalf("the ledger still holds %v for resilient", got)
	}
}

// sizedQuota is a ResourceQuota's hard limits of gpus GPUs that also counts
// CPU and memory, requests and limits: pods in its namespace must say how
// much of each they take (there is no LimitRange to fill in defaults), and
// hotgpu's holder and charge pods do.
func sizedQuota(gpus string) map[string]any {
	return map[string]any{"requests.nvidia.com/gpu": gpus,
		"requests.cpu": "4", "limits.cpu": "4", "requests.memory": "4Gi", "limits.memory": "4Gi"}
}

// sized gives p's containers CPU and memory, requests and limits, for a
// namespace under sizedQuota.
func sized(p *corev1.Pod) *corev1.Pod {
	for i := range p.Spec.Containers {
		r := &p.Spec.Containers[i].Resources
		for _, l := range []*corev1.ResourceList{&r.Requests, &r.Limits} {
			if *l == nil {
				*l = corev1.ResourceList{}
			}
			(*l)[corev1.ResourceCPU], (*l)[corev1.ResourceMemory] = resource.MustParse("50m"), resource.MustParse("32Mi")
		}
	}
	return p
}

// testQuotaAndHolder: with a ResourceQuota of 2 GPUs in team-a, an
// attachment's holder pod is Running on the node, listed by kubectl
// describe node, while the target container sees the GPU; deleting the
// holder detaches it (phase and event say why); and once a pod holds the 2
// GPUs, attaching 1 more is refused with the quota's message. The quota
// counts CPU and memory too, which the holder pod must say. A holder whose
// container kubelet creates again keeps running without the moved GPU.
func testQuotaAndHolder(t *testing.T, h *hotgpuCluster, k *tenants) {
	ctx := context.Background()
	quota := map[string]any{"apiVersion": "v1", "kind": "ResourceQuota",
		"metadata": map[string]any{"name": "gpus", "namespace": "team-a"},
		"spec":     map[string]any{"hard": sizedQuota("2")}}
	if err := h.Client().Create(ctx, "/api/v1/namespaces/team-a/resourcequotas", quota); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Client().Delete(ctx, "/api/v1/namespaces/team-a/resourcequotas/gpus") }()
	createPod(t, h.Cluster, sized(teamPod("target", 0)))
	defer deletePod(t, h.Cluster, "team-a", "target")

	out := k.mustHotgpu(t, "attach", "target", "-n", "team-a", "--count", "1", "--wait", "-o", "json")
	var att hotgpuv1.GPUAttachment
	if err := json.Unmarshal([]byte(out), &att); err != nil {
		t.Fatalf("attach -o json: %v\n%s", err, out)
	}
	// the GPUs are moved once NRI records them for the holder's container,
	// before kubelet's relist reports the holder Running
	holder := "gpuatt-holder-" + att.Name
	hp := waitPodRunning(t, h.Cluster, "team-a", holder)
	if hp.Spec.NodeName != h.NodeName || len(hp.OwnerReferences) != 1 || hp.OwnerReferences[0].UID != att.UID {
		t.Fatalf("holder pod %s: phase %s node %s owners %v", holder, hp.Status.Phase, hp.Spec.NodeName, hp.OwnerReferences)
	}
	visible, held := h.visibleGPUs(t, "team-a", "target"), h.heldBy(t, "team-a", "target")
	if len(visible) != 1 || !sameGPUs(visible, held) || held[0] != att.Status.GPUs[0].Index {
		t.Fatalf("target sees GPUs %v, the ledger holds %v, the status says %v", visible, held, att.Status.GPUs)
	}
	if got := h.heldBy(t, "team-a", holder); len(got) != 0 {
		t.Fatalf("the ledger holds GPUs %v for the holder pod: its allocation was not moved", got)
	}
	// the holder's pause dies: kubelet creates its container again, which
	// starts without the GPU it has moved; the target keeps it
	h.restartMain(t, hp)
	if again, still := h.visibleGPUs(t, "team-a", "target"), h.heldBy(t, "team-a", "target"); !slices.Equal(again, visible) || !slices.Equal(still, held) {
		t.Fatalf("after the holder's restart the target sees %v, the ledger holds %v; want %v and %v", again, still, visible, held)
	}
	describe, err := h.Kubectl(ctx, "describe", "node", h.NodeName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(describe, holder) {
		t.Fatalf("kubectl describe node does not list the holder pod %s:\n%s", holder, describe)
	}
	var rq corev1.ResourceQuota
	eventually(t, time.Minute, "the quota to charge the attached GPU", func() (bool, string) {
		if err := h.Client().Get(ctx, "/api/v1/namespaces/team-a/resourcequotas/gpus", &rq); err != nil {
			return false, err.Error()
		}
		used := rq.Status.Used["requests.nvidia.com/gpu"]
		return used.Value() == 1, fmt.Sprintf("used %v", rq.Status.Used)
	})

	// the holder goes: the GPU goes with it
	deletePod(t, h.Cluster, "team-a", holder)
	eventually(t, time.Minute, "the attachment ended by its holder's deletion", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 1 && atts[0].Status.Phase == hotgpuv1.Failed && strings.Contains(atts[0].Status.Message, "holder pod"), attachmentsString(atts)
	})
	if got := h.visibleGPUs(t, "team-a", "target"); len(got) != 0 {
		t.Fatalf("target still sees GPUs %v after its holder was deleted", got)
	}
	if got := h.heldBy(t, "team-a", "target"); len(got) != 0 {
		t.Fatalf("the ledger still holds %v for target after its holder was deleted", got)
	}
	events, err := h.Kubectl(ctx, "get", "events", "-n", "team-a", "--field-selector", "involvedObject.name="+att.Name)
	if err != nil || !strings.Contains(events, "HolderGone") {
		t.Fatalf("no HolderGone event on the attachment: %v\n%s", err, events)
	}
	if err := h.Client().Delete(ctx, "/apis/hotgpu.dev/v1alpha1/namespaces/team-a/gpuattachments/"+att.Name); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the ended attachment deleted", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 0, attachmentsString(atts)
	})

	// a pod holding the quota's 2 GPUs leaves no room for an attachment
	createPod(t, h.Cluster, sized(teamPod("greedy", 2)))
	defer deletePod(t, h.Cluster, "team-a", "greedy")
	waitPodRunning(t, h.Cluster, "team-a", "greedy")
	out, err = k.hotgpu("attach", "target", "-n", "team-a", "--count", "1", "--wait")
	if err == nil || !strings.Contains(out, "exceeded quota") {
		t.Fatalf("attach over quota: %v\n%s\nwant a failure with the quota's message", err, out)
	}
	if got := h.heldBy(t, "team-a", "target"); len(got) != 0 {
		t.Fatalf("the ledger holds %v for target after an attach over quota", got)
	}
	for _, a := range attachments(t, h.Cluster, "team-a") {
		_ = h.Client().Delete(ctx, "/apis/hotgpu.dev/v1alpha1/namespaces/team-a/gpuattachments/"+a.Name)
	}
	eventually(t, time.Minute, "the refused attachment deleted", func() (bool, string) {
		atts := attachments(t, h.Cluster, "team-a")
		return len(atts) == 0, attachmentsString(atts)
	})
}
