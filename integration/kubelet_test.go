package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// gpuResource is unique to this test process: on a machine shared by
// several developers, every other hotgpud started with the default config
// registers nvidia.com/gpu with whatever kubelet serves the device-plugins
// dir, and kubelet keeps only the last plugin of a resource.
var gpuResource = fmt.Sprintf("hotgpu-it.dev/gpu%d", os.Getpid())

var gpuPod = `apiVersion: v1
kind: Pod
metadata:
  name: gpu2
  namespace: default
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: ` + harness.BusyboxImage + `
    imagePullPolicy: Never
    command: ["sleep", "86400"]
    resources:
      limits:
        ` + gpuResource + `: 2
`

// TestRealKubelet runs a real kubelet v1.34 standalone in front of the
// harness containerd, with hotgpud (simulated DGX A100) as its device plugin
// and NRI plugin.
func TestRealKubelet(t *testing.T) {
	start := time.Now()
	bins := harness.Deps(t)
	if testing.Short() {
		t.Skip("-short: the kubelet test builds kubelet once (~5 min) and runs ~1 min")
	}
	c := harness.StartContainerd(t, harness.Options{Bins: bins})
	cfg := filepath.Join(t.TempDir(), "hotgpud.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\ndevicePlugin:\n  resourceName: "+gpuResource+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startHotgpud(t, c, "--config", cfg, "--kubelet-dir", kubeletPluginDir)
	k := startKubelet(t, c)
	t.Logf("kubelet %s ready to start (build/cache %s)", k.bin, kubeletBin.took.Round(time.Millisecond))
	pr := k.podResources(t)

	// Static pods that arrive before the plugin registered start without
	// devices: wait until kubelet can allocate all eight GPUs first.
	waitAllocatable(t, pr, 8, "the plugin's registration", time.Minute)
	t.Logf("registered after %s", time.Since(start).Round(time.Millisecond))

	k.runStaticPod("gpu2", gpuPod)
	ctr := waitContainer(t, c, "gpu2", "main")
	ids := checkTwoGPUs(t, c, d, pr, ctr)

	free := freeGPU(t, d, ids)
	checkAttachWithdraws(t, c, k, d, pr, free)

	// kubelet restart: it deletes our socket and re-creates kubelet.sock.
	k.restart()
	waitAllocatable(t, pr, 8, "re-registration after a kubelet restart", time.Minute)
	if got := devicesOf(t, pr, "gpu2-hotgpu-node"); !slices.Equal(got, ids) {
		t.Fatalf("after the kubelet restart the pod has %v, want %v", got, ids)
	}
	// Allocate still reaches the new registration.
	k.runStaticPod("gpu1", strings.NewReplacer("name: gpu2", "name: gpu1", ": 2\n", ": 1\n").Replace(gpuPod))
	one := waitContainer(t, c, "gpu1", "main")
	if out, _, _ := c.MustExec(t, one, "ls", "/dev"); len(gpuNodeRE.FindAllString(out, -1)) != 1 {
		t.Fatalf("pod allocated after the kubelet restart has GPU nodes %v, want one", gpuNodeRE.FindAllString(out, -1))
	}
	if held := kubeletHeld(t, d); len(held) != 3 {
		t.Fatalf("ledger holds %v for kubelet, want the 2+1 GPUs of both pods", held)
	}

	// hotgpud restart: kubelet loses the plugin (nothing allocatable), then
	// it registers again and the ledger still holds the pod's GPUs.
	d.stop()
	waitAllocatable(t, pr, 0, "kubelet to notice the plugin is gone", 30*time.Second)
	d.start()
	waitAllocatable(t, pr, 8, "re-registration after a hotgpud restart", time.Minute)
	if got := kubeletHeld(t, d); len(got) != 3 || !slices.Contains(got, ids[0]) || !slices.Contains(got, ids[1]) {
		t.Fatalf("after the hotgpud restart the ledger holds %v for kubelet, want the pods' %v and one more", got, ids)
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

var gpuNodeRE = regexp.MustCompile(`(?m)^nvidia[0-9]+$`)

// checkTwoGPUs checks the container has exactly two GPU nodes and that
// kubelet's PodResources, the ledger and the container agree on which.
func checkTwoGPUs(t *testing.T, c *harness.Containerd, d *hotgpud, pr podResourcesClient, ctr string) []string {
	t.Helper()
	out, _, code := c.MustExec(t, ctr, "ls", "/dev")
	nodes := gpuNodeRE.FindAllString(out, -1)
	if code != 0 || len(nodes) != 2 {
		t.Fatalf("container has GPU nodes %v (ls exit %d), want exactly two:\n%s", nodes, code, out)
	}
	ids := devicesOf(t, pr, "gpu2-hotgpu-node")
	if len(ids) != 2 {
		t.Fatalf("PodResources shows %v for the pod, want two %s", ids, gpuResource)
	}
	if held := kubeletHeld(t, d); !slices.Equal(held, ids) {
		t.Fatalf("ledger holds %v for kubelet, PodResources says %v", held, ids)
	}
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, g := range gpus {
		if slices.Contains(ids, g.UUID) {
			want = append(want, fmt.Sprintf("nvidia%d", g.Minor))
			if g.Grant.Holder.ContainerID != ctr {
				t.Errorf("GPU %s is held by %q, not the pod's container %s", g.UUID, g.Grant.Holder.ContainerID, ctr)
			}
		}
	}
	sort.Strings(nodes)
	if !slices.Equal(nodes, want) {
		t.Fatalf("container has %v, kubelet allocated %v", nodes, want)
	}
	env, _, _ := c.MustExec(t, ctr, "sh", "-c", "echo $HOTGPU_VISIBLE_DEVICES")
	if got := strings.Split(strings.TrimSpace(env), ","); !sameSet(got, ids) {
		t.Errorf("HOTGPU_VISIBLE_DEVICES = %q, want %v", env, ids)
	}
	return ids
}

// checkAttachWithdraws attaches a free GPU live to another container: kubelet
// must stop counting it as allocatable until it is detached. The container
// is kubelet's (a static pod): kubelet kills a pod it did not create in its
// containerd ("orphaned pod we had not seen before") at its next
// housekeeping, which made the attach fail now and then.
func checkAttachWithdraws(t *testing.T, c *harness.Containerd, k *kubelet, d *hotgpud, pr podResourcesClient, free string) {
	t.Helper()
	k.runStaticPod("other", strings.NewReplacer("name: gpu2", "name: other", "    resources:\n      limits:\n        "+gpuResource+": 2\n", "").Replace(gpuPod))
	other := waitContainer(t, c, "other", "main")
	target := attach.Target{ContainerID: other}
	if _, err := d.api.Attach(context.Background(), api.AttachRequest{Target: target, IDs: []string{free}}); err != nil {
		t.Fatalf("attach %s: %v", free, err)
	}
	waitAllocatable(t, pr, 7, "the attached GPU to leave allocatable", 10*time.Second)
	if ids, _ := allocatable(pr, gpuResource); slices.Contains(ids, free) {
		t.Fatalf("kubelet may still allocate %s, attached live to %s", free, other)
	}
	if _, err := d.api.Detach(context.Background(), api.DetachRequest{Target: target, IDs: []string{free}}); err != nil {
		t.Fatalf("detach %s: %v", free, err)
	}
	waitAllocatable(t, pr, 8, "the detached GPU to come back", 10*time.Second)
}

func waitAllocatable(t *testing.T, pr podResourcesClient, n int, what string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, what, func() (bool, string) {
		ids, err := allocatable(pr, gpuResource)
		if err != nil {
			return false, err.Error()
		}
		return len(ids) == n, fmt.Sprintf("%d allocatable", len(ids))
	})
}

func devicesOf(t *testing.T, pr podResourcesClient, pod string) []string {
	t.Helper()
	var ids []string
	eventually(t, 10*time.Second, "PodResources to list "+pod, func() (bool, string) {
		m, err := podDevices(pr, pod, gpuResource)
		if err != nil {
			return false, err.Error()
		}
		ids = m["main"]
		return len(ids) > 0, fmt.Sprint(m)
	})
	sort.Strings(ids)
	return ids
}

// kubeletHeld lists the UUIDs the ledger holds for kubelet, sorted.
func kubeletHeld(t *testing.T, d *hotgpud) []string {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range gpus {
		if g.Grant != nil && g.Grant.Reason == ledger.Kubelet {
			out = append(out, g.UUID)
		}
	}
	sort.Strings(out)
	return out
}

func freeGPU(t *testing.T, d *hotgpud, taken []string) string {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gpus {
		if g.Grant == nil && !slices.Contains(taken, g.UUID) {
			return g.UUID
		}
	}
	t.Fatal("no free GPU")
	return ""
}

// waitContainer waits for kubelet's container name of the static pod to
// run and returns its id.
func waitContainer(t *testing.T, c *harness.Containerd, pod, name string) string {
	t.Helper()
	var id string
	eventually(t, time.Minute, "static pod "+pod+" to run", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.CRI().Runtime().ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{"io.kubernetes.container.name": name},
		}})
		if err != nil {
			return false, err.Error()
		}
		for _, ctr := range resp.GetContainers() {
			if strings.HasPrefix(ctr.GetLabels()["io.kubernetes.pod.name"], pod) {
				id = ctr.GetId()
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d running containers named %s", len(resp.GetContainers()), name)
	})
	return id
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}
