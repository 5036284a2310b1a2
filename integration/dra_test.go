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
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// TestDRAClaimOnCluster runs hotgpud as a host process beside the cluster's
// kubelet (--kubeconfig, --dra, kubelet's private --root-dir), applies the
// DeviceClass of deploy/, and proves: the node's ResourceSlice lists the 8
// GPUs; a pod with a ResourceClaimTemplate asking one gpu.hotgpu.dev device
// runs with exactly the allocated GPU, held for the claim in the ledger
// (refused to live attach); the claim survives a hotgpud restart; deleting
// the pod unprepares it (GPU free, the claim's CDI spec gone).
func TestDRAClaimOnCluster(t *testing.T) {
	c, ctr := startCluster(t, nil)
	d := startHotgpud(t, ctr, "--kubeconfig", c.AdminKubeconfig, "--node-name", c.NodeName,
		"--dra", "--kubelet-root-dir", c.KubeletRootDir)
	ctx := context.Background()
	if out, err := c.Kubectl(ctx, "apply", "-f", "../deploy/dra.yaml"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	eventually(t, time.Minute, "the node's ResourceSlice with 8 GPUs", func() (bool, string) {
		n, err := sliceDevices(c)
		return n == 8, fmt.Sprintf("%d devices (%v)", n, err)
	})

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
	eventually(t, time.Minute, "the ResourceSlice again after the restart", func() (bool, string) {
		n, err := sliceDevices(c)
		return n == 8, fmt.Sprintf("%d devices (%v)", n, err)
	})

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
