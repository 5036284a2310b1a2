package integration

import (
	"context"
	"errors"
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

	"github.com/hotgpu/hotgpu/integration/cluster"
	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// TestDRAClaimOnCluster runs hotgpud as a host process beside the cluster's
// kubelet (--kubeconfig, --dra, kubelet's private --root-dir), applies the
// DeviceClass of deploy/, and proves: the node's ResourceSlice lists the 8
// GPUs, and only the 8th once live attach took 7; a pod with a ResourceClaimTemplate asking one gpu.hotgpu.dev device
// runs with exactly the allocated GPU, held for the claim in the ledger
// (refused to live attach); the claim survives a hotgpud restart and a kill -9; deleting
// the pod unprepares it (GPU free, the claim's CDI spec gone).
func TestDRAClaimOnCluster(t *testing.T) {
	c, ctr, d := startDRA(t)
	ctx := context.Background()
	// live attach takes 7 GPUs: DRA may then allocate only the 8th
	createPod(t, c, busyboxPod("idle", 0))
	mustCLI(t, d, "attach", "--pod", "default/idle", "--count", "7")
	waitSliceDevices(t, c, 1, "without the 7 attached GPUs")
	free := -1
	for _, s := range lsJSON(t, d) {
		if s.Grant == nil {
			free = s.Index
		}
	}

	tmpl := &resourcev1.ResourceClaimTemplate{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaimTemplate"},
		ObjectMeta: metav1.ObjectMeta{Name: "one-gpu", Namespace: "default"},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{{Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.hotgpu.dev"}}},
		}}},
	}
	if err := c.Client().Create(ctx, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates", tmpl); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("dra", 0)
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: &tmpl.Name}}
	pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	start := time.Now()
	p := createPod(t, c, pod)
	t.Logf("claim -> pod Running in %s", time.Since(start).Round(time.Millisecond))
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod's claim statuses %+v", p.Status.ResourceClaimStatuses)
	}
	claimName := *p.Status.ResourceClaimStatuses[0].ResourceClaimName
	var claim resourcev1.ResourceClaim
	if err := c.Client().Get(ctx, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/"+claimName, &claim); err != nil {
		t.Fatal(err)
	}
	if claim.Status.Allocation == nil || len(claim.Status.Allocation.Devices.Results) != 1 {
		t.Fatalf("claim %s allocation %+v, want one device", claimName, claim.Status.Allocation)
	}
	dev := claim.Status.Allocation.Devices.Results[0]
	index, err := strconv.Atoi(dev.Device[len("gpu-"):])
	if dev.Driver != "gpu.hotgpu.dev" || dev.Pool != c.NodeName || err != nil {
		t.Fatalf("allocated %+v, want a gpu.hotgpu.dev device of pool %s", dev, c.NodeName)
	}
	if index != free {
		t.Fatalf("DRA allocated GPU %d, want %d, the one live attach left free", index, free)
	}
	deletePod(t, c, "default", "idle")
	eventually(t, time.Minute, "the attached GPUs free again", func() (bool, string) {
		held := 0
		for _, s := range lsJSON(t, d) {
			if s.Grant != nil {
				held++
			}
		}
		return held == 1, fmt.Sprintf("%d held", held)
	})
	gpus := lsJSON(t, d)
	g := gpus[slices.IndexFunc(gpus, func(s api.GPUStatus) bool { return s.Index == index })]
	if got, want := visibleNodes(t, c, "default", "dra"), []string{strconv.Itoa(g.Minor)}; !slices.Equal(got, want) {
		t.Fatalf("pod sees /dev/nvidia%v, want exactly the allocated GPU %d (nvidia%v)", got, index, want)
	}
	checkClaimHeld := func(why string) {
		t.Helper()
		for _, s := range lsJSON(t, d) {
			if s.Index != index {
				if s.Grant != nil {
					t.Errorf("%s: GPU %d held by %+v, want only GPU %d held", why, s.Index, s.Grant, index)
				}
				continue
			}
			if s.Grant == nil || s.Grant.Reason != ledger.DRA || s.Grant.Holder.ClaimUID != string(claim.UID) {
				t.Fatalf("%s: GPU %d grant %+v, want held for claim %s", why, index, s.Grant, claim.UID)
			}
		}
		if _, err := os.Stat(filepath.Join(ctr.CDIDir, "hotgpu-dra-"+string(claim.UID)+".yaml")); err != nil {
			t.Fatalf("%s: the claim's CDI spec: %v", why, err)
		}
	}
	checkClaimHeld("prepared")
	if out, errOut, code := cli(t, d, "attach", "--pod", "default/dra", "--gpu", strconv.Itoa(index)); code == 0 || !strings.Contains(errOut, "ResourceClaim default/"+claimName) {
		t.Fatalf("live attach of the claim's GPU: exit %d, %s%s; want a refusal naming the claim", code, out, errOut)
	}

	d.stop()
	d.start()
	checkClaimHeld("after a hotgpud restart")
	d.kill9()
	d.start()
	checkClaimHeld("after kill -9 and a start")
	waitSliceDevices(t, c, 8, "again after the restart")

	deletePod(t, c, "default", "dra")
	eventually(t, time.Minute, "the claim unprepared", func() (bool, string) {
		for _, s := range lsJSON(t, d) {
			if s.Grant != nil {
				return false, fmt.Sprintf("GPU %d held by %+v", s.Index, s.Grant)
			}
		}
		_, err := os.Stat(filepath.Join(ctr.CDIDir, "hotgpu-dra-"+string(claim.UID)+".yaml"))
		return errors.Is(err, os.ErrNotExist), fmt.Sprintf("claim spec: %v", err)
	})
}

// startDRA starts a cluster and hotgpud with its DRA plugin (extra flags
// after), applies deploy/dra.yaml (the DeviceClass) and waits for the
// node's ResourceSlice with all 8 GPUs.
func startDRA(t *testing.T, extra ...string) (*cluster.Cluster, *harness.Containerd, *hotgpud) {
	t.Helper()
	c, ctr := startCluster(t, nil)
	d := startHotgpud(t, ctr, append([]string{"--kubeconfig", c.AdminKubeconfig, "--node-name", c.NodeName,
		"--dra", "--kubelet-root-dir", c.KubeletRootDir}, extra...)...)
	if out, err := c.Kubectl(context.Background(), "apply", "-f", "../deploy/dra.yaml"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitSliceDevices(t, c, 8, "the node's GPUs")
	return c, ctr, d
}

// waitSliceDevices waits until hotgpud's ResourceSlices publish n devices.
func waitSliceDevices(t *testing.T, c *cluster.Cluster, n int, why string) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("the ResourceSlice with %d GPUs (%s)", n, why), func() (bool, string) {
		got, err := sliceDevices(c)
		return got == n, fmt.Sprintf("%d devices (%v)", got, err)
	})
}

// sliceDevices counts the devices hotgpud's ResourceSlices publish.
func sliceDevices(c *cluster.Cluster) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list resourcev1.ResourceSliceList
	if err := c.Client().Get(ctx, "/apis/resource.k8s.io/v1/resourceslices", &list); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list.Items {
		if s.Spec.Driver == "gpu.hotgpu.dev" && s.Spec.NodeName != nil && *s.Spec.NodeName == c.NodeName {
			n += len(s.Spec.Devices)
		}
	}
	return n, nil
}

// visibleNodes lists the minors of the /dev/nvidiaN nodes a pod sees.
func visibleNodes(t testing.TB, c *cluster.Cluster, ns, pod string) []string {
	t.Helper()
	out, err := c.Kubectl(context.Background(), "exec", "-n", ns, pod, "--", "ls", "/dev")
	if err != nil {
		t.Fatal(err)
	}
	var gpus []string
	for _, m := range gpuNode.FindAllStringSubmatch(out, -1) {
		gpus = append(gpus, m[1])
	}
	return gpus
}

// TestDRAAndDevicePluginNeverShare: with hotgpud serving kubelet both as
// the device plugin and as the DRA driver, a device-plugin pod and a DRA
// pod of 4 GPUs each fill the 8 with disjoint GPUs, and then one more pod
// of each kind stays Pending.
func TestDRAAndDevicePluginNeverShare(t *testing.T) {
	c, _, _ := startDRA(t, "--kubelet-dir", "/var/lib/kubelet/device-plugins")
	ctx := context.Background()
	waitSlice := func(n int, why string) {
		t.Helper()
		waitSliceDevices(t, c, n, why)
	}
	waitAlloc := func(n int64, why string) {
		t.Helper()
		eventually(t, time.Minute, fmt.Sprintf("allocatable nvidia.com/gpu %d (%s)", n, why), func() (bool, string) {
			var node corev1.Node
			if err := c.Client().Get(ctx, "/api/v1/nodes/"+c.NodeName, &node); err != nil {
				return false, err.Error()
			}
			a := node.Status.Allocatable["nvidia.com/gpu"]
			return a.Value() == n, a.String()
		})
	}
	waitSlice(8, "all free")
	waitAlloc(8, "all free")

	createPod(t, c, busyboxPod("dp", 4))
	waitSlice(4, "the device plugin's 4 left out")
	createDRAPod(t, c, "dra4", 4)
	waitAlloc(4, "DRA's 4 withdrawn from the device plugin")
	dp, dra := visibleNodes(t, c, "default", "dp"), visibleNodes(t, c, "default", "dra4")
	if len(dp) != 4 || len(dra) != 4 {
		t.Fatalf("device-plugin pod sees %v, DRA pod sees %v; want 4 each", dp, dra)
	}
	for _, m := range dp {
		if slices.Contains(dra, m) {
			t.Fatalf("GPU nvidia%s given to both: device plugin %v, DRA %v", m, dp, dra)
		}
	}

	if err := c.Client().Create(ctx, "/api/v1/namespaces/default/pods", busyboxPod("dp-more", 1)); err != nil {
		t.Fatal(err)
	}
	pendingDRA := draPod(t, c, "dra-more", 1)
	if err := c.Client().Create(ctx, "/api/v1/namespaces/default/pods", pendingDRA); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dp-more", "dra-more"} {
		eventually(t, time.Minute, name+" refused by the scheduler", func() (bool, string) {
			p, err := getPod(t, c, "default", name)
			if err != nil {
				return false, err.Error()
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
					return true, ""
				}
			}
			return false, string(p.Status.Phase) + " " + podConditions(p)
		})
		if p, _ := getPod(t, c, "default", name); p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
			t.Fatalf("%s is %s on %q, want Pending", name, p.Status.Phase, p.Spec.NodeName)
		}
	}
	for _, name := range []string{"dp-more", "dra-more", "dra4", "dp"} {
		deletePod(t, c, "default", name)
	}
}

// draPod is a busybox pod asking for n gpu.hotgpu.dev devices through a
// ResourceClaimTemplate of its own name.
func draPod(t testing.TB, c *cluster.Cluster, name string, n int64) *corev1.Pod {
	t.Helper()
	claimTemplate(t, c, name, n)
	return claimPod(name, name)
}

// claimTemplate creates a ResourceClaimTemplate asking for n
// gpu.hotgpu.dev devices.
func claimTemplate(t testing.TB, c *cluster.Cluster, name string, n int64) {
	t.Helper()
	tmpl := &resourcev1.ResourceClaimTemplate{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaimTemplate"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{{Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: "gpu.hotgpu.dev", AllocationMode: resourcev1.DeviceAllocationModeExactCount, Count: n,
			}}},
		}}},
	}
	if err := c.Client().Create(context.Background(), "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates", tmpl); err != nil {
		t.Fatal(err)
	}
}

// claimPod is a busybox pod whose container has a claim made from the
// ResourceClaimTemplate tmpl.
func claimPod(name, tmpl string) *corev1.Pod {
	pod := busyboxPod(name, 0)
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: &tmpl}}
	pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	return pod
}

func createDRAPod(t testing.TB, c *cluster.Cluster, name string, n int64) *corev1.Pod {
	t.Helper()
	return createPod(t, c, draPod(t, c, name, n))
}

// TestDRANVLinkPairOnCluster: on the pcie8 preset (NVLink pairs behind PCIe
// switches) a claim of two GPUs constrained to one nvlinkDomain, with a CEL
// selector on memory, gets two GPUs joined by NVLink, none of them the one
// live attach holds.
func TestDRANVLinkPairOnCluster(t *testing.T) {
	c, _, d := startDRA(t, "--simulate", "pcie8")
	ctx := context.Background()
	// GPU 1 attached live leaves GPU 0 without its NVLink partner: the
	// first two free devices in order (0 and 2) are not a pair, so only the
	// constraint makes the scheduler find one.
	createPod(t, c, busyboxPod("idle", 0))
	mustCLI(t, d, "attach", "--pod", "default/idle", "--gpu", "1")
	waitSliceDevices(t, c, 7, "without GPU 1")
	pod := draPod(t, c, "pair", 2)
	tmplPath := "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates/pair"
	var tmpl resourcev1.ResourceClaimTemplate
	if err := c.Client().Get(ctx, tmplPath, &tmpl); err != nil {
		t.Fatal(err)
	}
	// draPod made a plain template: replace it with the constrained one
	if err := c.Client().Delete(ctx, tmplPath); err != nil {
		t.Fatal(err)
	}
	spec := &tmpl.Spec.Spec.Devices
	spec.Requests[0].Exactly.Selectors = []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{
		Expression: `device.capacity["gpu.hotgpu.dev"].memory.compareTo(quantity("1Gi")) >= 0`,
	}}}
	domain := resourcev1.FullyQualifiedName("gpu.hotgpu.dev/nvlinkDomain")
	spec.Constraints = []resourcev1.DeviceConstraint{{Requests: []string{"gpu"}, MatchAttribute: &domain}}
	tmpl.ResourceVersion, tmpl.UID = "", ""
	tmpl.TypeMeta = metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaimTemplate"}
	if err := c.Client().Create(ctx, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates", &tmpl); err != nil {
		t.Fatal(err)
	}
	createPod(t, c, pod)
	seen := visibleNodes(t, c, "default", "pair")
	if len(seen) != 2 {
		t.Fatalf("pair sees GPUs %v, want 2", seen)
	}
	byMinor := map[string]api.GPUStatus{}
	for _, s := range lsJSON(t, d) {
		byMinor[strconv.Itoa(s.Minor)] = s
	}
	a, b := byMinor[seen[0]], byMinor[seen[1]]
	linked := slices.ContainsFunc(a.Peers, func(p gpu.Peer) bool { return p.Index == b.Index && p.NVLinks > 0 })
	if !linked {
		t.Fatalf("pair got GPUs %d and %d, not joined by NVLink (peers of %d: %+v)", a.Index, b.Index, a.Index, a.Peers)
	}
	if a.Index == 1 || b.Index == 1 {
		t.Fatalf("pair got GPU 1, held by live attach")
	}
	deletePod(t, c, "default", "pair")
	deletePod(t, c, "default", "idle")
}
