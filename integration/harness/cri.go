package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI is a small CRI (runtime v1) client that does what kubelet does for the
// tests: host-network pods under the instance's cgroup, containers from the
// local images, ExecSync. It keeps each pod's config, which CreateContainer
// must send again. Safe for concurrent use.
type CRI struct {
	conn         *grpc.ClientConn
	rt           runtimeapi.RuntimeServiceClient
	img          runtimeapi.ImageServiceClient
	cgroupParent string
	logDir       string

	mu   sync.Mutex
	pods map[string]*runtimeapi.PodSandboxConfig
}

// DialCRI connects to the CRI service at a unix socket. Pods get cgroup parents
// under cgroupParent and log dirs under logDir.
func DialCRI(address, cgroupParent, logDir string) (*CRI, error) {
	// Reconnect quickly: containerd restarts are part of the tests.
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	conn, err := grpc.NewClient("unix://"+address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: time.Second}))
	if err != nil {
		return nil, fmt.Errorf("failed to create CRI client for %s: %w", address, err)
	}
	return &CRI{
		conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn),
		cgroupParent: cgroupParent, logDir: logDir, pods: map[string]*runtimeapi.PodSandboxConfig{},
	}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// Runtime and Images give the raw CRI services for what the helpers do not cover.
func (c *CRI) Runtime() runtimeapi.RuntimeServiceClient { return c.rt }
func (c *CRI) Images() runtimeapi.ImageServiceClient    { return c.img }

// Ping succeeds once the CRI runtime service answers on the unix socket at
// address, which it first dials itself so that it does not wait out gRPC's
// reconnect backoff after a containerd restart.
func (c *CRI) Ping(ctx context.Context, address string) error {
	conn, err := net.DialTimeout("unix", address, time.Second)
	if err != nil {
		return err
	}
	conn.Close()
	c.conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.rt.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	return err
}

// HasImage reports whether CRI knows an image reference.
func (c *CRI) HasImage(ctx context.Context, ref string) (bool, error) {
	resp, err := c.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, fmt.Errorf("failed to get status of image %s: %w", ref, err)
	}
	return resp.Image != nil, nil
}

// RunPod starts a host-network pod sandbox, with its annotations set on the
// sandbox as kubelet does (NRI hands them to plugins). An empty uid gets a
// random one. It returns the pod sandbox ID.
func (c *CRI) RunPod(ctx context.Context, name, namespace, uid string, annotations map[string]string) (string, error) {
	if uid == "" {
		uid = randomID()
	}
	logDir := filepath.Join(c.logDir, namespace+"_"+name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create pod log dir: %w", err)
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		LogDirectory: logDir,
		Annotations:  annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: c.cgroupParent + "/pod" + strings.ReplaceAll(uid, "-", "_"),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	return c.RunPodSandbox(ctx, cfg)
}

// RunPodSandbox runs a pod from a full config (kept for CreateContainer).
func (c *CRI) RunPodSandbox(ctx context.Context, cfg *runtimeapi.PodSandboxConfig) (string, error) {
	resp, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return "", fmt.Errorf("failed to run pod %s/%s: %w", cfg.GetMetadata().GetNamespace(), cfg.GetMetadata().GetName(), err)
	}
	c.mu.Lock()
	c.pods[resp.PodSandboxId] = cfg
	c.mu.Unlock()
	return resp.PodSandboxId, nil
}

// ContainerOptions describe a container; the zero value runs `sleep 86400`
// from the busybox image.
type ContainerOptions struct {
	Image       string   // default BusyboxImage
	Command     []string // entrypoint; default "sleep 86400" when Args is empty too
	Args        []string
	Env         map[string]string
	CDIDevices  []string // fully qualified CDI names, sent in the CRI CDIDevices field
	Annotations map[string]string
	AddCaps     []string // CRI form, without "CAP_": e.g. "SYS_ADMIN" (MKNOD is in containerd's default set)
	Privileged  bool
	// ReadOnlyRoot makes the container's root filesystem read-only.
	ReadOnlyRoot bool
	// ReadOnlyMounts bind-mounts host paths (keys) read-only at container
	// paths (values).
	ReadOnlyMounts map[string]string
}

// CreateContainer creates a container in a pod made by RunPod/RunPodSandbox.
func (c *CRI) CreateContainer(ctx context.Context, podID, name string, o ContainerOptions) (string, error) {
	c.mu.Lock()
	podCfg := c.pods[podID]
	c.mu.Unlock()
	if podCfg == nil {
		return "", fmt.Errorf("unknown pod %s: create pods with this client's RunPod", podID)
	}
	resp, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID, Config: containerConfig(name, o), SandboxConfig: podCfg,
	})
	if err != nil {
		return "", fmt.Errorf("failed to create container %s in pod %s: %w", name, podID, err)
	}
	return resp.ContainerId, nil
}

func containerConfig(name string, o ContainerOptions) *runtimeapi.ContainerConfig {
	if o.Image == "" {
		o.Image = BusyboxImage
	}
	if len(o.Command) == 0 && len(o.Args) == 0 {
		o.Command = []string{"sleep", "86400"}
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: name},
		Image:       &runtimeapi.ImageSpec{Image: o.Image},
		Command:     o.Command,
		Args:        o.Args,
		Annotations: o.Annotations,
		LogPath:     name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			Privileged:     o.Privileged,
			Capabilities:   &runtimeapi.Capability{AddCapabilities: o.AddCaps},
			ReadonlyRootfs: o.ReadOnlyRoot,
		}},
	}
	for host, ctr := range o.ReadOnlyMounts {
		cfg.Mounts = append(cfg.Mounts, &runtimeapi.Mount{HostPath: host, ContainerPath: ctr, Readonly: true})
	}
	keys := make([]string, 0, len(o.Env))
	for k := range o.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(o.Env[k])})
	}
	for _, d := range o.CDIDevices {
		cfg.CDIDevices = append(cfg.CDIDevices, &runtimeapi.CDIDevice{Name: d})
	}
	return cfg
}

// Start starts a created container.
func (c *CRI) Start(ctx context.Context, id string) error {
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("failed to start container %s: %w", id, err)
	}
	return nil
}

// RunContainer creates and starts a container.
func (c *CRI) RunContainer(ctx context.Context, podID, name string, o ContainerOptions) (string, error) {
	id, err := c.CreateContainer(ctx, podID, name, o)
	if err != nil {
		return "", err
	}
	return id, c.Start(ctx, id)
}

// Exec runs cmd in a running container (CRI ExecSync) and returns its output
// and exit code; err is only for failing to run it at all.
func (c *CRI) Exec(ctx context.Context, id string, cmd ...string) (stdout, stderr string, exitCode int, err error) {
	timeout := int64(30)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(1, int64(time.Until(dl).Seconds()))
	}
	resp, err := c.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
	if err != nil {
		return "", "", -1, fmt.Errorf("failed to exec %q in container %s: %w", cmd, id, err)
	}
	return string(resp.Stdout), string(resp.Stderr), int(resp.ExitCode), nil
}

// StopContainer stops a container, killing it after timeout seconds (0: at once).
func (c *CRI) StopContainer(ctx context.Context, id string, timeout int64) error {
	if _, err := c.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
		return fmt.Errorf("failed to stop container %s: %w", id, err)
	}
	return nil
}

// RemoveContainer removes a container (stopping it first if needed).
func (c *CRI) RemoveContainer(ctx context.Context, id string) error {
	if _, err := c.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("failed to remove container %s: %w", id, err)
	}
	return nil
}

// StopPod stops a pod and all its containers.
func (c *CRI) StopPod(ctx context.Context, podID string) error {
	if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		return fmt.Errorf("failed to stop pod %s: %w", podID, err)
	}
	return nil
}

// RemovePod removes a stopped pod and its containers.
func (c *CRI) RemovePod(ctx context.Context, podID string) error {
	if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		return fmt.Errorf("failed to remove pod %s: %w", podID, err)
	}
	c.mu.Lock()
	delete(c.pods, podID)
	c.mu.Unlock()
	return nil
}

// ListPods returns the IDs of all pod sandboxes.
func (c *CRI) ListPods(ctx context.Context) ([]string, error) {
	resp, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("failed to list pods: %w", err)
	}
	ids := make([]string, 0, len(resp.Items))
	for _, p := range resp.Items {
		ids = append(ids, p.Id)
	}
	return ids, nil
}

// ContainerState returns the CRI state of a container (CONTAINER_RUNNING, ...).
func (c *CRI) ContainerState(ctx context.Context, id string) (runtimeapi.ContainerState, error) {
	resp, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return runtimeapi.ContainerState_CONTAINER_UNKNOWN, fmt.Errorf("failed to get status of container %s: %w", id, err)
	}
	return resp.GetStatus().GetState(), nil
}

// ContainerInfo is the part of containerd's verbose container status the tests
// use: what NRI also reports to plugins.
type ContainerInfo struct {
	Pid         int    `json:"pid"`
	SandboxID   string `json:"sandboxID"`
	RuntimeSpec struct {
		Linux struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
	// Raw is the whole verbose "info" JSON (config, full runtimeSpec, ...).
	Raw json.RawMessage `json:"-"`
}

// ContainerInfo returns containerd's verbose info for a container.
func (c *CRI) ContainerInfo(ctx context.Context, id string) (*ContainerInfo, error) {
	resp, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("failed to get status of container %s: %w", id, err)
	}
	raw, ok := resp.Info["info"]
	if !ok {
		return nil, fmt.Errorf("containerd gave no verbose info for container %s", id)
	}
	info := &ContainerInfo{Raw: json.RawMessage(raw)}
	if err := json.Unmarshal([]byte(raw), info); err != nil {
		return nil, fmt.Errorf("failed to decode info of container %s: %w", id, err)
	}
	return info, nil
}

// ContainerPID returns the host PID of a running container's init process.
func (c *CRI) ContainerPID(ctx context.Context, id string) (int, error) {
	info, err := c.ContainerInfo(ctx, id)
	if err != nil {
		return 0, err
	}
	if info.Pid <= 0 {
		return 0, fmt.Errorf("container %s has no process (not running?)", id)
	}
	return info.Pid, nil
}

// DeviceCgroupDir returns the host dir of a running container's cgroup v1
// devices cgroup (holding devices.list, devices.allow, devices.deny).
func (c *CRI) DeviceCgroupDir(ctx context.Context, id string) (string, error) {
	return c.CgroupDir(ctx, id, "devices")
}

// CgroupDir returns the host dir of a running container's cgroup for a v1
// controller, or its cgroup2 dir when controller is "".
func (c *CRI) CgroupDir(ctx context.Context, id, controller string) (string, error) {
	pid, err := c.ContainerPID(ctx, id)
	if err != nil {
		return "", err
	}
	return ProcessCgroupDir(pid, controller)
}

// ProcessCgroupDir returns the host dir of a process's cgroup for a v1
// controller ("devices"), or its cgroup2 dir when controller is "".
func ProcessCgroupDir(pid int, controller string) (string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return "", err
	}
	mnt, ok := mounts[controller]
	if !ok {
		return "", fmt.Errorf("no cgroup hierarchy for controller %q is mounted", controller)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("failed to read cgroups of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (controller == "" && parts[0] == "0" && parts[1] == "") || (controller != "" && slices.Contains(strings.Split(parts[1], ","), controller)) {
			return filepath.Join(mnt, parts[2]), nil
		}
	}
	return "", fmt.Errorf("process %d is in no %q cgroup", pid, controller)
}

func randomID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("crypto/rand failed"))
	}
	return hex.EncodeToString(b)
}
