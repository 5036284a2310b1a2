package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hotgpu/hotgpu/integration/cluster"
	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
)

// hotgpuImage is the reference `make image-archive` is asked to build; the
// overlay points the DaemonSet's image at it.
const hotgpuImage = "hotgpu.local/hotgpu:it"

// hotgpuCluster is a cluster with hotgpu deployed by its DaemonSet, as
// deploy/README.md says, through a kustomize overlay for private host paths.
type hotgpuCluster struct {
	*cluster.Cluster
	ctr    *harness.Containerd
	host   string // the overlay's private host dirs
	socket string // hotgpud's API socket on the host (the DaemonSet's /run/hotgpu)
	cli    string // the node CLI, from the image's build
	api    *api.Client
}

// deployHotgpu builds hotgpu's image without Docker (`make image-archive`),
// imports it into the cluster's containerd, applies deploy/ through an
// overlay, and waits until the DaemonSet's pod is Ready and the node
// offers 8 nvidia.com/gpu.
func deployHotgpu(t testing.TB) *hotgpuCluster {
	t.Helper()
	c, ctr := startCluster(t, map[string]string{"nvidia.com/gpu.present": "true"})
	h := &hotgpuCluster{Cluster: c, ctr: ctr, host: filepath.Join(c.Dir, "host")}
	h.socket = filepath.Join(h.host, "api", "hotgpu.sock")
	h.api = api.NewClient(h.socket)
	start := time.Now()
	archive := h.buildImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := ctr.Ctr(ctx, "k8s.io", "images", "import", "--snapshotter", ctr.Snapshotter, archive); err != nil {
		t.Fatal(err)
	}
	t.Logf("image built and imported in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	overlay := h.writeOverlay(t)
	if out, err := c.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl apply -k:\n%s", out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.Kubectl(context.Background(), "logs", "-n", "hotgpu-system", "daemonset/hotgpud", "--tail", "60")
			t.Logf("hotgpud log:\n%s", out)
		}
	})
	h.waitDaemonPod(t, "")
	h.waitAllocatable(t, 8, "hotgpud's registration")
	t.Logf("DaemonSet applied -> pod Ready -> allocatable 8 in %s", time.Since(start).Round(time.Millisecond))
	return h
}

func (h *hotgpuCluster) buildImage(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(h.Dir, "image-bin")
	archive := filepath.Join(bin, "hotgpu-image.tar")
	cmd := exec.Command("make", "-s", "image-archive", "BIN="+bin, "IMAGE_ARCHIVE="+archive, "IMAGE_REF="+hotgpuImage)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image-archive: %v\n%s", err, out)
	}
	h.cli = filepath.Join(bin, "hotgpu")
	return archive
}

// writeOverlay writes a kustomize overlay of deploy/: this build's image,
// simulated GPUs with no driver files (--driver-root /: a simulated node
// takes driver files only from a driver root other than /, and this one
// has none), and the test's private host paths (containerd's NRI
// socket dir and CDI dir, kubelet's pod-resources and DRA plugin dirs under
// its private root dir, a state, API, driver and hook dir). kubelet's
// device-plugins dir is the real one: it is fixed.
func (h *hotgpuCluster) writeOverlay(t testing.TB) string {
	t.Helper()
	deploy, err := filepath.Abs("../deploy")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.Dir, "overlay")
	// kustomize takes a base only by relative path.
	base, err := filepath.Rel(dir, deploy)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(h.host, "driver")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	name, tag, _ := strings.Cut(hotgpuImage, ":")
	kustomization := `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ` + base + `
images:
  - name: ghcr.io/hotgpu/hotgpu
    newName: ` + name + `
    newTag: "` + tag + `"
patches:
  - path: node.yaml
  - path: config.yaml
`
	vol := func(name, path string) string {
		return "        - name: " + name + "\n          hostPath: {path: " + path + "}\n"
	}
	registry := filepath.Join(h.KubeletRootDir, "plugins_registry")
	draDir := filepath.Join(h.KubeletRootDir, "plugins", "gpu.hotgpu.dev")
	patch := `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hotgpud
  namespace: hotgpu-system
spec:
  template:
    spec:
      # The API server listens on 127.0.0.1 only and the cluster has no
      # kube-proxy: hotgpud's in-cluster config reaches it on the host network.
      hostNetwork: true
      containers:
        - name: hotgpud
          # A simulated node has no driver: "/" as the driver root writes a spec
          # without driver files (the overlay's driver dir stays empty).
          # Holder pods use the pause image the node already has (no registry).
          # kubelet's root dir is private: the DRA plugin registers there.
          args: ["--config", "/etc/hotgpu/hotgpud.yaml", "--simulate", "dgxa100", "--driver-root", "/",
            "--holder-image", "` + harness.PauseImage + `", "--kubelet-root-dir", "` + h.KubeletRootDir + `"]
          env:
            - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
            - {name: KUBERNETES_SERVICE_PORT, value: "` + h.Server[strings.LastIndex(h.Server, ":")+1:] + `"}
          # The DRA dirs are mounted where they are on the host: kubelet
          # dials the plugin at the path it registers.
          volumeMounts:
            - {mountPath: /var/lib/kubelet/plugins_registry, $patch: delete}
            - {mountPath: /var/lib/kubelet/plugins/gpu.hotgpu.dev, $patch: delete}
            - {name: plugins-registry, mountPath: ` + registry + `}
            - {name: dra-plugin, mountPath: ` + draDir + `}
      volumes:
` + vol("nri", filepath.Dir(h.ctr.NRISocket)) + vol("cdi", h.ctr.CDIDir) +
		vol("plugins-registry", registry) + vol("dra-plugin", draDir) +
		vol("pod-resources", filepath.Join(h.KubeletRootDir, "pod-resources")) +
		vol("state", filepath.Join(h.host, "state")) + vol("api", filepath.Dir(h.socket)) +
		vol("driver", filepath.Join(h.host, "driver")) + vol("hook-bin", filepath.Join(h.host, "hook-bin"))
	config := annotationPolicy(t, deploy)
	for file, data := range map[string]string{"kustomization.yaml": kustomization, "node.yaml": patch, "config.yaml": config} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// annotationPolicy returns deploy/'s ConfigMap with annotations allowed in
// namespace team-a, up to 4 GPUs a container (TestAnnotationAdjust).
func annotationPolicy(t testing.TB, deploy string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deploy, "hotgpu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if !strings.Contains(doc, "\nkind: ConfigMap\n") {
			continue
		}
		const base = "namespaces: []\n      maxPerContainer: 1\n"
		if !strings.Contains(doc, base) {
			t.Fatalf("deploy/hotgpu.yaml's ConfigMap has no %q", base)
		}
		return strings.Replace(doc, base, "namespaces: [team-a]\n      maxPerContainer: 4\n", 1)
	}
	t.Fatal("deploy/hotgpu.yaml has no ConfigMap")
	return ""
}

// daemonPods lists the DaemonSet's pods.
func (h *hotgpuCluster) daemonPods(t testing.TB) ([]corev1.Pod, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list corev1.PodList
	sel := url.QueryEscape("app.kubernetes.io/component=hotgpud")
	err := h.Client().Get(ctx, "/api/v1/namespaces/hotgpu-system/pods?labelSelector="+sel, &list)
	return list.Items, err
}

// waitDaemonPod waits for one Ready DaemonSet pod other than notUID, with
// hotgpud's API answering on the host, and returns its name.
func (h *hotgpuCluster) waitDaemonPod(t testing.TB, notUID string) corev1.Pod {
	t.Helper()
	var ready corev1.Pod
	eventually(t, 2*time.Minute, "the hotgpud DaemonSet pod Ready", func() (bool, string) {
		pods, err := h.daemonPods(t)
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range pods {
			if string(p.UID) != notUID && p.DeletionTimestamp == nil && podReady(&p) {
				ready = p
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				st, err := h.api.Status(ctx)
				cancel()
				if err != nil || !st.NRIConnected {
					return false, fmt.Sprintf("pod Ready; API: %v, status %+v", err, st)
				}
				return true, ""
			}
			states = append(states, p.Name+" "+string(p.Status.Phase)+" "+podConditions(&p))
		}
		return false, fmt.Sprint(states)
	})
	return ready
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeGPUs returns the node's capacity and allocatable nvidia.com/gpu.
func (h *hotgpuCluster) nodeGPUs(t testing.TB) (capacity, allocatable int64, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n corev1.Node
	if err := h.Client().Get(ctx, "/api/v1/nodes/"+h.NodeName, &n); err != nil {
		return 0, 0, err
	}
	c, a := n.Status.Capacity["nvidia.com/gpu"], n.Status.Allocatable["nvidia.com/gpu"]
	return c.Value(), a.Value(), nil
}

// waitAllocatable waits until the node status (what the scheduler sees)
// offers n nvidia.com/gpu.
func (h *hotgpuCluster) waitAllocatable(t testing.TB, n int64, why string) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("allocatable nvidia.com/gpu %d (%s)", n, why), func() (bool, string) {
		c, a, err := h.nodeGPUs(t)
		if err != nil {
			return false, err.Error()
		}
		return a == n, fmt.Sprintf("capacity %d allocatable %d", c, a)
	})
}

// hotgpu runs the node CLI against the DaemonSet's hotgpud.
func (h *hotgpuCluster) hotgpu(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(h.cli, append(args, "--socket", h.socket)...).CombinedOutput()
	if err != nil {
		t.Fatalf("hotgpu %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var gpuNode = regexp.MustCompile(`(?m)^nvidia([0-9]+)$`)

// visibleGPUs lists the /dev/nvidiaN nodes a pod's container sees.
func (h *hotgpuCluster) visibleGPUs(t testing.TB, ns, pod string) []string {
	t.Helper()
	out, err := h.Kubectl(context.Background(), "exec", "-n", ns, pod, "--", "ls", "/dev")
	if err != nil {
		t.Fatal(err)
	}
	var gpus []string
	for _, m := range gpuNode.FindAllStringSubmatch(out, -1) {
		gpus = append(gpus, m[1])
	}
	return gpus
}

// heldBy returns the GPU indexes the ledger holds for a pod.
func (h *hotgpuCluster) heldBy(t testing.TB, ns, pod string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gpus, err := h.api.GPUs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var held []int
	for _, g := range gpus {
		if g.Grant != nil && g.Grant.Holder.PodNamespace == ns && g.Grant.Holder.PodName == pod {
			held = append(held, g.Index)
		}
	}
	return held
}
