package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// TestKubeletPodLifecycle runs the pod shapes a cluster has and the simple
// allocation test does not: a container that exits and is restarted, an init
// container sharing its GPU with the app container, and a deleted pod. A
// real kubelet v1.34 in front of the harness containerd; hotgpud knows
// kubelet's PodResources socket, as on a node.
func TestKubeletPodLifecycle(t *testing.T) {
	bins := harness.Deps(t)
	if testing.Short() {
		t.Skip("-short: the kubelet test builds kubelet once (~5 min) and runs ~1 min")
	}
	c := harness.StartContainerd(t, harness.Options{Bins: bins})
	k := startKubelet(t, c)
	cfg := filepath.Join(t.TempDir(), "hotgpud.yaml")
	podResources := filepath.Join(k.dir, "root", "pod-resources", "kubelet.sock")
	if err := os.WriteFile(cfg, []byte("version: v1\ndevicePlugin:\n  resourceName: "+gpuResource+
		"\n  podResourcesSocket: "+podResources+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startHotgpud(t, c, "--config", cfg, "--kubelet-dir", kubeletPluginDir)
	pr := k.podResources(t)
	waitAllocatable(t, pr, 8, "the plugin's registration", time.Minute)

	t.Run("InitAndAppContainerShareAGPU", func(t *testing.T) { testInitAndApp(t, c, d, k) })
	t.Run("StoppedContainerKeepsItsGPUAcrossARestart", func(t *testing.T) { testCrashLoopRestart(t, c, d, k) })
	t.Run("DeletedPodReleasesItsGPUs", func(t *testing.T) { testDeletedPodReleases(t, c, d, k) })
}

// staticPod is a one-GPU pod; init, when set, is an init container that
// also asks for one GPU and succeeds only if it has a GPU node.
func staticPod(name, command string, init bool) string {
	limits := "    resources:\n      limits:\n        " + gpuResource + ": 1\n"
	m := `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: default
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  restartPolicy: Always
`
	if init {
		m += `  initContainers:
  - name: init
    image: ` + harness.BusyboxImage + `
    imagePullPolicy: Never
    command: ["sh", "-c", "ls /dev | grep -q '^nvidia[0-9]'"]
` + limits
	}
	return m + `  containers:
  - name: main
    image: ` + harness.BusyboxImage + `
    imagePullPolicy: Never
    command: ["sh", "-c", ` + fmt.Sprintf("%q", command) + `]
` + limits
}

// testInitAndApp: kubelet gives the init container's GPU to the app
// container too and calls Allocate twice; both containers must start.
func testInitAndApp(t *testing.T, c *harness.Containerd, d *hotgpud, k *kubelet) {
	k.runStaticPod("initgpu", staticPod("initgpu", "sleep 86400", true))
	ctr := waitContainer(t, c, "initgpu", "main")
	nodes := gpuNodes(t, c, ctr)
	if len(nodes) != 1 {
		t.Fatalf("app container has GPU nodes %v, want one", nodes)
	}
	g := grantOf(t, d, "initgpu-hotgpu-node")
	if g == nil || g.Grant.Holder.ContainerID != ctr || fmt.Sprintf("nvidia%d", g.Minor) != nodes[0] {
		t.Fatalf("ledger grant %+v does not match the app container %s with %v", g, ctr, nodes)
	}
}

// testCrashLoopRestart: a container that exits while hotgpud is down
// keeps its pod's GPU across hotgpud's restart (kubelet still counts it as
// the pod's): live attach may not take it, and the restarted container gets
// it again.
func testCrashLoopRestart(t *testing.T, c *harness.Containerd, d *hotgpud, k *kubelet) {
	ctx := context.Background()
	// PID 1 exits with 1 on SIGTERM: `kill 1` from an exec makes it crash.
	k.runStaticPod("crash", staticPod("crash", "trap 'exit 1' TERM; sleep 86400 & wait", false))
	first := waitContainer(t, c, "crash", "main")
	g := grantOf(t, d, "crash-hotgpu-node")
	if g == nil {
		t.Fatal("the ledger holds no GPU for the pod")
	}
	// The first restart is immediate; the next waits kubelet's back-off
	// (10 s), time for hotgpud to restart while the container is stopped.
	c.MustExec(t, first, "kill", "1")
	second := waitNewContainer(t, c, "crash", first)
	d.stop()
	c.MustExec(t, second, "kill", "1")
	waitExited(t, c, second)
	syncs := countLog(d, "synchronized with the runtime")
	d.start()
	eventually(t, 30*time.Second, "hotgpud's first Synchronize", func() (bool, string) {
		n := countLog(d, "synchronized with the runtime")
		return n > syncs, fmt.Sprintf("%d synchronizations", n)
	})
	if now := grantOf(t, d, "crash-hotgpu-node"); now == nil || now.UUID != g.UUID || now.Grant.Reason != ledger.Kubelet {
		t.Fatalf("after the restart the ledger gives %+v to the pod, want GPU %s (kubelet)", now, g.UUID)
	}
	pod := c.MustRunPod(t, "thief", nil)
	other := c.MustRunContainer(t, pod, "main", harness.ContainerOptions{})
	target := attach.Target{ContainerID: other}
	if _, err := d.api.Attach(ctx, api.AttachRequest{Target: target, IDs: []string{g.UUID}}); err == nil {
		_, _ = d.api.Detach(ctx, api.DetachRequest{Target: target, IDs: []string{g.UUID}})
		t.Fatalf("live attach took GPU %s, which kubelet still counts as pod crash's", g.UUID)
	}
	third := waitNewContainer(t, c, "crash", second)
	if nodes := gpuNodes(t, c, third); !slices.Equal(nodes, []string{fmt.Sprintf("nvidia%d", g.Minor)}) {
		t.Fatalf("restarted container has GPU nodes %v, want nvidia%d", nodes, g.Minor)
	}
	if now := grantOf(t, d, "crash-hotgpu-node"); now == nil || now.Grant.Holder.ContainerID != third {
		t.Fatalf("GPU %s is held by %+v, not the restarted container %s", g.UUID, now, third)
	}
}

// testDeletedPodReleases: kubelet frees a deleted pod's devices at once;
// the ledger must follow within seconds, not at RemovePodSandbox (kubelet's
// container GC, up to a minute later).
func testDeletedPodReleases(t *testing.T, c *harness.Containerd, d *hotgpud, k *kubelet) {
	k.runStaticPod("gone", staticPod("gone", "sleep 86400", false))
	ctr := waitContainer(t, c, "gone", "main")
	g := grantOf(t, d, "gone-hotgpu-node")
	if g == nil {
		t.Fatal("the ledger holds no GPU for the pod")
	}
	podUID := podUIDOf(t, c, ctr)
	if err := os.Remove(filepath.Join(k.manifests, "gone.yaml")); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	eventually(t, 20*time.Second, "the deleted pod's GPU to be free", func() (bool, string) {
		now, ok := lookupGPU(t, d, g.UUID)
		return ok && now.Grant == nil, fmt.Sprintf("%+v", now.Grant)
	})
	t.Logf("GPU free %s after the pod's removal; sandbox still there: %v",
		time.Since(removed).Round(100*time.Millisecond), sandboxExists(c, podUID))
}

// grantOf returns the GPU the ledger holds for a pod (by kubelet's pod
// name), or nil.
func grantOf(t *testing.T, d *hotgpud, pod string) *api.GPUStatus {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range gpus {
		if g := gpus[i].Grant; g != nil && g.Holder.PodName == pod {
			return &gpus[i]
		}
	}
	return nil
}

func lookupGPU(t *testing.T, d *hotgpud, uuid string) (api.GPUStatus, bool) {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gpus {
		if g.UUID == uuid {
			return g, true
		}
	}
	return api.GPUStatus{}, false
}

// waitNewContainer waits for the pod's container "main" to run with an id
// other than old.
func waitNewContainer(t *testing.T, c *harness.Containerd, pod, old string) string {
	t.Helper()
	var id string
	eventually(t, time.Minute, "container main of "+pod+" to run again", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.CRI().Runtime().ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{"io.kubernetes.container.name": "main"},
		}})
		if err != nil {
			return false, err.Error()
		}
		for _, ctr := range resp.GetContainers() {
			if strings.HasPrefix(ctr.GetLabels()["io.kubernetes.pod.name"], pod) && ctr.GetId() != old {
				id = ctr.GetId()
				return true, ""
			}
		}
		return false, "only the old container"
	})
	return id
}

func waitExited(t *testing.T, c *harness.Containerd, id string) {
	t.Helper()
	eventually(t, 30*time.Second, "container "+id+" to exit", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.CRI().ContainerState(ctx, id)
		return err == nil && st == runtimeapi.ContainerState_CONTAINER_EXITED, fmt.Sprint(st, err)
	})
}

func podUIDOf(t *testing.T, c *harness.Containerd, ctr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.CRI().Runtime().ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatus().GetLabels()["io.kubernetes.pod.uid"]
}

// sandboxExists reports whether a sandbox of the pod (by UID) is still
// known to containerd.
func sandboxExists(c *harness.Containerd, podUID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.CRI().Runtime().ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": podUID},
	}})
	return err == nil && len(resp.GetItems()) > 0
}

// countLog counts the lines of hotgpud's log (across restarts) with msg.
func countLog(d *hotgpud, msg string) int {
	b, err := os.ReadFile(filepath.Join(d.dir, "hotgpud.log"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	return strings.Count(string(b), msg)
}
