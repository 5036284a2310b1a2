package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/hotgpu/hotgpu/integration/cluster"
	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// kubeletPluginDir is where kubelet looks for device plugins, whatever its
// --root-dir: the path is compiled into kubelet.
const kubeletPluginDir = "/var/lib/kubelet/device-plugins"

var kubeletBin struct {
	once sync.Once
	path string
	took time.Duration
	err  error
}

// buildKubelet runs integration/kubelet-deps.sh once per test binary: a real
// kubelet from the Go module proxy, cached in $HOTGPU_CACHE.
func buildKubelet(t testing.TB) string {
	t.Helper()
	kubeletBin.once.Do(func() {
		start := time.Now()
		cmd := exec.Command("bash", "kubelet-deps.sh")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			kubeletBin.err = fmt.Errorf("kubelet-deps.sh failed: %v\n%s", err, tail(errOut.String(), 30))
			return
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		kubeletBin.path, kubeletBin.took = lines[len(lines)-1], time.Since(start)
	})
	if kubeletBin.err != nil {
		t.Fatal(kubeletBin.err)
	}
	return kubeletBin.path
}

// kubelet is a real kubelet run standalone (no API server): static pods
// from a manifest dir, in front of a harness containerd.
type kubelet struct {
	t         testing.TB
	bin       string
	dir       string // root dir, config, manifests, log
	manifests string
	args      []string
	cmd       *exec.Cmd
	done      chan struct{}
	log       *os.File
}

func startKubelet(t *testing.T, c *harness.Containerd) *kubelet {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the kubelet test needs root: kubelet, containerd and "+kubeletPluginDir)
	}
	// Registered first, so it runs after kubelet is stopped and cleaned up.
	expectUnchanged(t, kubeletLogLinks)
	claimPluginDir(t)
	bin := buildKubelet(t)
	dir, err := os.MkdirTemp("", "hgkl-")
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{t: t, bin: bin, dir: dir, manifests: filepath.Join(dir, "manifests")}
	if err := os.MkdirAll(k.manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(t, k.manifests, c.Address)), 0o644); err != nil {
		t.Fatal(err)
	}
	k.args = []string{
		"--config", cfg,
		"--root-dir", filepath.Join(dir, "root"),
		"--cert-dir", filepath.Join(dir, "pki"),
		"--hostname-override", "hotgpu-node",
		"--v", "2",
	}
	k.start()
	t.Cleanup(func() {
		start := time.Now()
		k.stopPods(c)
		k.stop()
		t.Logf("kubelet and its pods stopped in %s", time.Since(start).Round(time.Millisecond))
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "kubelet.log"))
			t.Logf("kubelet log tail:\n%s", tail(string(b), 80))
		}
		_ = unmountUnder(dir)
		_ = os.RemoveAll(dir)
	})
	return k
}

func kubeletConfig(t *testing.T, manifests, containerd string) string {
	port := strings.Split(freeAddr(t), ":")[1]
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: ` + manifests + `
fileCheckFrequency: 1s
syncFrequency: 2s
containerRuntimeEndpoint: unix://` + containerd + `
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
address: 127.0.0.1
port: ` + port + `
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
`
}

// kubeletLogLinks is where kubelet links every container's log, whatever
// its flags (compiled in, like kubeletPluginDir).
const kubeletLogLinks = "/var/log/containers"

// expectUnchanged fails t if, when t ends, dir's entries differ from now.
func expectUnchanged(t *testing.T, dir string) {
	t.Helper()
	list := func() string {
		entries, _ := os.ReadDir(dir)
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		return strings.Join(names, "\n")
	}
	before := list()
	t.Cleanup(func() {
		if after := list(); after != before {
			t.Errorf("%s changed by the test:\nbefore:\n%s\nafter:\n%s", dir, before, after)
		}
	})
}

// claimPluginDir makes sure no other kubelet serves kubeletPluginDir and
// removes what this test leaves there and in kubeletLogLinks.
func claimPluginDir(t *testing.T) {
	t.Helper()
	sock := filepath.Join(kubeletPluginDir, "kubelet.sock")
	if conn, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		conn.Close()
		testenv.Skipf(t, "a kubelet already serves %s on this host; the test needs the device-plugins dir to itself", sock)
	}
	_, statErr := os.Stat("/var/lib/kubelet")
	created := errors.Is(statErr, os.ErrNotExist)
	restoreLogLinks, err := cluster.GuardHostPath(kubeletLogLinks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restoreLogLinks(); err != nil {
			t.Errorf("failed to remove kubelet's log links: %v", err)
		}
		if created {
			_ = os.RemoveAll("/var/lib/kubelet")
			return
		}
		_ = os.Remove(sock)
		_ = os.Remove(filepath.Join(kubeletPluginDir, "kubelet_internal_checkpoint"))
	})
}

func (k *kubelet) start() {
	k.t.Helper()
	var err error
	k.log, err = os.OpenFile(filepath.Join(k.dir, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		k.t.Fatal(err)
	}
	k.cmd = exec.Command(k.bin, k.args...)
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(k.cmd, k.done)
}

func (k *kubelet) stop() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
	k.cmd = nil
	k.log.Close()
}

func (k *kubelet) restart() {
	k.t.Helper()
	k.stop()
	k.start()
}

// runStaticPod writes a manifest; kubelet notices it within fileCheckFrequency.
func (k *kubelet) runStaticPod(name, manifest string) {
	k.t.Helper()
	if err := os.WriteFile(filepath.Join(k.manifests, name+".yaml"), []byte(manifest), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// stopPods removes the manifests and waits until kubelet has stopped the
// pods' containers; the harness removes the stopped sandboxes.
func (k *kubelet) stopPods(c *harness.Containerd) {
	entries, _ := os.ReadDir(k.manifests)
	if len(entries) == 0 || k.cmd == nil {
		return
	}
	for _, e := range entries {
		_ = os.Remove(filepath.Join(k.manifests, e.Name()))
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.CRI().Runtime().ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{"io.kubernetes.pod.namespace": "default"},
		}})
		cancel()
		if err == nil && len(resp.GetContainers()) == 0 {
			return
		}
	}
}

// podResources is a client of kubelet's PodResources API.
func (k *kubelet) podResources(t testing.TB) podResourcesClient {
	t.Helper()
	sock := filepath.Join(k.dir, "root", "pod-resources", "kubelet.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return podresources.NewPodResourcesListerClient(conn)
}

// allocatable returns the device IDs of resource kubelet may allocate now
// (its healthy devices), or an error while kubelet is not up.
func allocatable(pr podResourcesClient, resource string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := pr.GetAllocatableResources(ctx, &podresources.AllocatableResourcesRequest{})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, d := range resp.GetDevices() {
		if d.GetResourceName() == resource {
			ids = append(ids, d.GetDeviceIds()...)
		}
	}
	return ids, nil
}

// podDevices returns the device IDs of resource kubelet assigned to a pod's
// containers, by container name.
func podDevices(pr podResourcesClient, pod, resource string) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := pr.List(ctx, &podresources.ListPodResourcesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, p := range resp.GetPodResources() {
		if p.GetName() != pod {
			continue
		}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if d.GetResourceName() == resource {
					out[c.GetName()] = append(out[c.GetName()], d.GetDeviceIds()...)
				}
			}
		}
	}
	return out, nil
}

// eventually polls ok every 100ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var done bool
		if done, last = ok(); done {
			return
		}
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
}

// unmountUnder unmounts what kubelet left mounted under dir (pod volumes).
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	var errs []error
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			if err := syscall.Unmount(f[1], syscall.MNT_DETACH); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

type podResourcesClient = podresources.PodResourcesListerClient
