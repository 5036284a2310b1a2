package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// PodSpec is what kubelet would ask for: one pod with one busybox container.
type PodSpec struct {
	Handler     string            // CRI runtime handler ("" = default runc)
	Annotations map[string]string // pod annotations (hotgpu's GPU request goes here)
	Env         map[string]string
	CDIDevices  []string // CRI CDIDevices: containerd's own CDI injection
}

// Pods creates and removes pods on one containerd, as kubelet would.
type Pods struct {
	C  *harness.Containerd
	rt runtimeapi.RuntimeServiceClient
}

// NewPods drives pods on c through CRI.
func NewPods(c *harness.Containerd) *Pods { return &Pods{C: c, rt: c.CRI().Runtime()} }

// Pod is a running pod with one container.
type Pod struct {
	ID, Container, Name string
	cfg                 *runtimeapi.PodSandboxConfig
}

// Start runs a pod and creates and starts its container "app", returning how
// long the three CRI calls took together.
func (p *Pods) Start(ctx context.Context, spec PodSpec) (*Pod, time.Duration, error) {
	uid := randomID()
	name := "bench-" + uid[:8]
	logDir := filepath.Join(p.C.Dir, "pods", uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("failed to create pod log dir: %w", err)
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: Namespace, Uid: uid},
		LogDirectory: logDir,
		Annotations:  spec.Annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: p.C.CgroupParent + "/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	start := time.Now()
	resp, err := p.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: spec.Handler})
	if err != nil {
		return nil, 0, fmt.Errorf("failed to run pod (handler %q): %w", spec.Handler, err)
	}
	pod := &Pod{ID: resp.PodSandboxId, Name: name, cfg: cfg}
	id, err := p.Create(ctx, pod, spec)
	if err == nil {
		err = p.StartContainer(ctx, id)
	}
	took := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("%w\ncontainerd log:\n%s", err, p.C.LogTail(15))
	}
	pod.Container = id
	return pod, took, nil
}

// Create creates container "app" in a pod.
func (p *Pods) Create(ctx context.Context, pod *Pod, spec PodSpec) (string, error) {
	c := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: harness.BusyboxImage},
		Command:  []string{"sleep", "86400"},
		LogPath:  "app.log",
		Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
	}
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(spec.Env[k])})
	}
	for _, d := range spec.CDIDevices {
		c.CDIDevices = append(c.CDIDevices, &runtimeapi.CDIDevice{Name: d})
	}
	resp, err := p.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.ID, Config: c, SandboxConfig: pod.cfg})
	if err != nil {
		return "", fmt.Errorf("failed to create container: %w", err)
	}
	return resp.ContainerId, nil
}

// StartContainer starts a created container.
func (p *Pods) StartContainer(ctx context.Context, id string) error {
	if _, err := p.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("failed to start container: %w", err)
	}
	return nil
}

// Recreate is what users do today to give a running container a GPU: stop
// and remove it, then create and start it again with the GPU.
func (p *Pods) Recreate(ctx context.Context, pod *Pod, spec PodSpec) (time.Duration, error) {
	start := time.Now()
	if _, err := p.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: pod.Container}); err != nil {
		return 0, fmt.Errorf("failed to stop container: %w", err)
	}
	if _, err := p.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: pod.Container}); err != nil {
		return 0, fmt.Errorf("failed to remove container: %w", err)
	}
	id, err := p.Create(ctx, pod, spec)
	if err != nil {
		return 0, err
	}
	if err := p.StartContainer(ctx, id); err != nil {
		return 0, err
	}
	pod.Container = id
	return time.Since(start), nil
}

// Remove stops and removes a pod.
func (p *Pods) Remove(ctx context.Context, pod *Pod) error {
	if _, err := p.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.ID}); err != nil {
		return fmt.Errorf("failed to stop pod: %w", err)
	}
	if _, err := p.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.ID}); err != nil {
		return fmt.Errorf("failed to remove pod: %w", err)
	}
	return nil
}

// Exec runs a command in the pod's container and returns stdout+stderr.
func (p *Pods) Exec(ctx context.Context, pod *Pod, cmd ...string) (string, error) {
	resp, err := p.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: pod.Container, Cmd: cmd, Timeout: 10})
	if err != nil {
		return "", fmt.Errorf("failed to exec %q: %w", cmd, err)
	}
	return string(resp.Stdout) + string(resp.Stderr), nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
