package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// testDRAOnDaemonSet: with hotgpu deployed by deploy/ (the DaemonSet's
// hotgpud registered as the DRA driver through the mounted plugin dirs, the
// DeviceClass, the RBAC for ResourceSlices), the node's ResourceSlice lists
// the 8 GPUs; a pod with a ResourceClaimTemplate asking one gpu.hotgpu.dev
// device runs with exactly the allocated GPU, held for its claim in the
// ledger and withdrawn from the device plugin; deleting the pod gives it back.
func testDRAOnDaemonSet(t *testing.T, h *hotgpuCluster) {
	free := len(freeGPUs(t, h)) // the Deployment of "deployment" holds some
	eventually(t, time.Minute, fmt.Sprintf("the node's ResourceSlice with the %d free GPUs", free), func() (bool, string) {
		n, err := sliceDevices(h.Cluster)
		return n == free, fmt.Sprintf("%d devices (%v)", n, err)
	})
	start := time.Now()
	p := createDRAPod(t, h.Cluster, "dra-ds", 1)
	t.Logf("pod with a claim created -> Running in %s", time.Since(start).Round(time.Millisecond))
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod's claim statuses %+v", p.Status.ResourceClaimStatuses)
	}
	ctx := context.Background()
	var claim resourcev1.ResourceClaim
	claimPath := "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/" + *p.Status.ResourceClaimStatuses[0].ResourceClaimName
	if err := h.Client().Get(ctx, claimPath, &claim); err != nil {
		t.Fatal(err)
	}
	if claim.Status.Allocation == nil || len(claim.Status.Allocation.Devices.Results) != 1 {
		t.Fatalf("claim %s allocation %+v, want one device", claim.Name, claim.Status.Allocation)
	}
	dev := claim.Status.Allocation.Devices.Results[0]
	index, err := strconv.Atoi(strings.TrimPrefix(dev.Device, "gpu-"))
	if dev.Driver != "gpu.hotgpu.dev" || dev.Pool != h.NodeName || err != nil {
		t.Fatalf("allocated %+v, want a gpu.hotgpu.dev device of pool %s", dev, h.NodeName)
	}
	ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
	gpus, err := h.api.GPUs(ctx2)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	minor := ""
	for _, g := range gpus {
		held := g.Grant != nil && g.Grant.Reason == ledger.DRA && g.Grant.Holder.ClaimUID == string(claim.UID)
		if held != (g.Index == index) {
			t.Fatalf("GPU %d grant %+v; want only GPU %d held, for claim %s", g.Index, g.Grant, index, claim.UID)
		}
		if held {
			minor = strconv.Itoa(g.Minor)
		}
	}
	if got := h.visibleGPUs(t, "default", "dra-ds"); !slices.Equal(got, []string{minor}) {
		t.Fatalf("pod sees /dev/nvidia%v, want exactly the claim's GPU %d (nvidia%s)", got, index, minor)
	}
	h.waitAllocatable(t, 7, "the claim's GPU withdrawn from the device plugin")

	deletePod(t, h.Cluster, "default", "dra-ds")
	if err := h.Client().Delete(ctx, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates/dra-ds"); err != nil {
		t.Fatal(err)
	}
	h.waitNoGrants(t, ledger.DRA, "the claim unprepared")
	h.waitAllocatable(t, 8, "the claim's GPU back to the device plugin")
}

// waitNoGrants waits until hotgpud's ledger holds no GPU for reason (for
// any reason when "").
func (h *hotgpuCluster) waitNoGrants(t testing.TB, reason ledger.Reason, why string) {
	t.Helper()
	eventually(t, time.Minute, why, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gpus, err := h.api.GPUs(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, g := range gpus {
			if g.Grant != nil && (reason == "" || g.Grant.Reason == reason) {
				return false, fmt.Sprintf("GPU %d held by %+v", g.Index, g.Grant)
			}
		}
		return true, ""
	})
}

// freeGPUs lists the GPUs nobody holds.
func freeGPUs(t *testing.T, h *hotgpuCluster) []api.GPUStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gpus, err := h.api.GPUs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(gpus, func(g api.GPUStatus) bool { return g.Grant != nil })
}

// testResourceSlicePolicy: admission.yaml keeps hotgpud's ResourceSlice
// writes to its own node. As hotgpud's service account with another node
// in its token (or none), replacing or deleting this node's slice and
// creating one for this node are refused; with this node's name, a slice
// of another driver is refused and its own slice may be replaced.
func testResourceSlicePolicy(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	slice := nodeSlice(t, h)
	slice.Labels = map[string]string{"hotgpu.dev/policy-test": "1"}
	replace := writeJSON(t, h, "slice-replace.json", slice)
	foreign := resourcev1.ResourceSlice{}
	foreign.APIVersion, foreign.Kind = "resource.k8s.io/v1", "ResourceSlice"
	foreign.Name = "policy-test-" + h.NodeName
	foreign.Spec = resourcev1.ResourceSliceSpec{
		Driver: "gpu.example.com", NodeName: &h.NodeName,
		Pool:    resourcev1.ResourcePool{Name: h.NodeName, Generation: 1, ResourceSliceCount: 1},
		Devices: []resourcev1.Device{{Name: "gpu-0"}},
	}
	other := writeJSON(t, h, "slice-other-driver.json", &foreign)
	mine := foreign.DeepCopy()
	mine.Name, mine.Spec.Driver = "policy-test-mine", "gpu.hotgpu.dev"
	create := writeJSON(t, h, "slice-create.json", mine)
	defer func() {
		for _, name := range []string{foreign.Name, mine.Name} {
			_, _ = h.Kubectl(ctx, "delete", "resourceslice", name, "--ignore-not-found", "--wait=false")
		}
	}()

	for _, tc := range []struct {
		name, node string
		args       []string
		want       string
	}{
		{"replace-no-node", "", []string{"replace", "-f", replace}, "not bound to a node"},
		{"replace-other-node", "other-node", []string{"replace", "-f", replace}, "belongs to another node"},
		{"delete-other-node", "other-node", []string{"delete", "resourceslice", slice.Name, "--wait=false"}, "belongs to another node"},
		{"create-other-node", "other-node", []string{"create", "-f", create}, "may only write ResourceSlices of driver gpu.hotgpu.dev, node and pool other-node"},
		{"create-other-driver", h.NodeName, []string{"create", "-f", other}, "may only write ResourceSlices of driver gpu.hotgpu.dev"},
		{"replace-own-node", h.NodeName, []string{"replace", "-f", replace}, ""},
	} {
		args := append([]string{"--kubeconfig", agentKubeconfig(t, h, tc.node)}, tc.args...)
		out, err := h.Kubectl(ctx, args...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: the node's own agent may replace its slice: %v %s", tc.name, err, out)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: gave %v %s, want refused with %q", tc.name, err, out, tc.want)
		}
	}
	if got := nodeSlice(t, h); got.UID != slice.UID {
		t.Errorf("the node's slice was replaced by another (%s -> %s)", slice.UID, got.UID)
	}
}

// nodeSlice returns hotgpud's ResourceSlice of the cluster's node.
func nodeSlice(t *testing.T, h *hotgpuCluster) *resourcev1.ResourceSlice {
	t.Helper()
	var list resourcev1.ResourceSliceList
	if err := h.Client().Get(context.Background(), "/apis/resource.k8s.io/v1/resourceslices", &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if s.Spec.Driver == "gpu.hotgpu.dev" && s.Spec.NodeName != nil && *s.Spec.NodeName == h.NodeName {
			s.APIVersion, s.Kind = "resource.k8s.io/v1", "ResourceSlice"
			return s
		}
	}
	t.Fatalf("no gpu.hotgpu.dev ResourceSlice of node %s in %d slices", h.NodeName, len(list.Items))
	return nil
}

func writeJSON(t *testing.T, h *hotgpuCluster, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.Dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testDRARefusalStatus: a claim allocated a GPU that live attach holds (the
// race the slice update closes, forced here by writing the allocation as
// the admin) is refused by Prepare, and the claim says why:
// status.devices has the device not Ready, reason GPUHeldByAnotherAllocator,
// naming the holder. admission.yaml keeps hotgpud's account from changing
// the allocation, the reservations or another node's device status. Once
// the GPU is detached, kubelet's retry prepares the claim, the pod runs,
// and the condition turns Ready (Prepared).
func testDRARefusalStatus(t *testing.T, h *hotgpuCluster) {
	ctx := context.Background()
	free := freeGPUs(t, h)
	if len(free) == 0 {
		t.Fatal("no free GPU")
	}
	gpu, dev := strconv.Itoa(free[0].Index), "gpu-"+strconv.Itoa(free[0].Index)
	createPod(t, h.Cluster, busyboxPod("holder", 0))
	h.hotgpu(t, "attach", "--pod", "default/holder", "--gpu", gpu)
	claimPath := "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/refused"
	claim := &resourcev1.ResourceClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "refused", Namespace: "default"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{{Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.hotgpu.dev"}}},
		}},
	}
	if err := h.Client().Create(ctx, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims", claim); err != nil {
		t.Fatal(err)
	}
	if err := h.Client().Get(ctx, claimPath, claim); err != nil {
		t.Fatal(err)
	}
	claim.APIVersion, claim.Kind = "resource.k8s.io/v1", "ResourceClaim"
	claim.Status.Allocation = &resourcev1.AllocationResult{
		Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{
			{Request: "gpu", Driver: "gpu.hotgpu.dev", Pool: h.NodeName, Device: dev},
		}},
		NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{h.NodeName}},
		}}}},
	}
	if _, err := h.Client().Raw(ctx, "PUT", claimPath+"/status", claim); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("refused", 0)
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &claim.Name}}
	pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	if err := h.Client().Create(ctx, "/api/v1/namespaces/default/pods", pod); err != nil {
		t.Fatal(err)
	}
	var why string
	eventually(t, time.Minute, "the claim's status saying why Prepare refused it", func() (bool, string) {
		if err := h.Client().Get(ctx, claimPath, claim); err != nil {
			return false, err.Error()
		}
		for _, d := range claim.Status.Devices {
			for _, c := range d.Conditions {
				if d.Driver == "gpu.hotgpu.dev" && d.Device == dev && c.Type == "Ready" && c.Status == metav1.ConditionFalse {
					why = c.Reason + ": " + c.Message
					return c.Reason == "GPUHeldByAnotherAllocator" && strings.Contains(c.Message, "default/holder"), why
				}
			}
		}
		return false, fmt.Sprintf("status.devices %+v", claim.Status.Devices)
	})
	t.Logf("claim status: %s", why)
	if p, err := getPod(t, h.Cluster, "default", "refused"); err != nil {
		t.Fatal(err)
	} else if p.Status.Phase == corev1.PodRunning {
		t.Fatal("the pod of the refused claim runs")
	}

	// as hotgpud does: a patch of the status subresource, no get
	for _, tc := range []struct {
		name, node, patch, want string
	}{
		{"other-node-device-status", "other-node", `{"status":{"devices":[]}}`, "may only write the status of gpu.hotgpu.dev devices in pool other-node"},
		{"own-node-reservations", h.NodeName, `{"status":{"reservedFor":null}}`, "may not change a claim's allocation or reservations"},
	} {
		rc, err := clientcmd.BuildConfigFromFlags("", agentKubeconfig(t, h, tc.node))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.ResourceV1().ResourceClaims("default").Patch(ctx, "refused", types.MergePatchType, []byte(tc.patch), metav1.PatchOptions{}, "status")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: hotgpud's account patching the claim's status: %v, want refused with %q", tc.name, err, tc.want)
		}
	}

	h.hotgpu(t, "detach", "--pod", "default/holder", "--gpu", gpu)
	eventually(t, 2*time.Minute, "kubelet's retry to prepare the claim", func() (bool, string) {
		p, err := getPod(t, h.Cluster, "default", "refused")
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + podConditions(p)
	})
	if err := h.Client().Get(ctx, claimPath, claim); err != nil {
		t.Fatal(err)
	}
	if d := claim.Status.Devices; len(d) != 1 || len(d[0].Conditions) != 1 || d[0].Conditions[0].Status != metav1.ConditionTrue || d[0].Conditions[0].Reason != "Prepared" {
		t.Errorf("claim status.devices %+v once prepared, want %s Ready (Prepared)", d, dev)
	}
	deletePod(t, h.Cluster, "default", "refused")
	deletePod(t, h.Cluster, "default", "holder")
	if err := h.Client().Delete(ctx, claimPath); err != nil {
		t.Fatal(err)
	}
	h.waitAllocatable(t, 8, "the claim's GPU back to the device plugin")
}
