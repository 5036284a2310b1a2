package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/net/multiplex"
	"github.com/containerd/ttrpc"
)

// FakeRuntime is the runtime end of NRI without a runtime: it lets a real
// hotgpud process see a thousand containers without running a thousand
// containers. It speaks the protocol as containerd's adaptation does —
// multiplexed ttrpc on the plugin's connection, RegisterPlugin, Configure,
// Synchronize, then events — for one plugin.
type FakeRuntime struct {
	Socket string
	l      net.Listener
	mux    multiplex.Mux
	plugin api.PluginService
	reg    chan struct{}
}

// StartFakeRuntime listens for one NRI plugin at dir/nri.sock.
func StartFakeRuntime(dir string) (*FakeRuntime, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f := &FakeRuntime{Socket: filepath.Join(dir, "nri.sock"), reg: make(chan struct{}, 1)}
	l, err := net.Listen("unix", f.Socket)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on the fake NRI socket: %w", err)
	}
	f.l = l
	return f, nil
}

// Accept waits for the plugin, registers, configures and synchronizes it
// with an empty node.
func (f *FakeRuntime) Accept(ctx context.Context) error {
	conn, err := f.l.Accept()
	if err != nil {
		return fmt.Errorf("no NRI plugin connected: %w", err)
	}
	f.mux = multiplex.Multiplex(conn, multiplex.WithBlockedRead())
	pconn, err := f.mux.Open(multiplex.PluginServiceConn)
	if err != nil {
		return fmt.Errorf("failed to open the plugin channel: %w", err)
	}
	f.plugin = api.NewPluginClient(ttrpc.NewClient(pconn))
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	rl, err := f.mux.Listen(multiplex.RuntimeServiceConn)
	if err != nil {
		return fmt.Errorf("failed to open the runtime channel: %w", err)
	}
	api.RegisterRuntimeService(srv, runtimeService{f.reg})
	go func() { _ = srv.Serve(context.Background(), rl) }()
	f.mux.Unblock()
	select {
	case <-f.reg:
	case <-time.After(10 * time.Second):
		return errors.New("the NRI plugin did not register within 10s")
	}
	if _, err := f.plugin.Configure(ctx, &api.ConfigureRequest{RuntimeName: "hotgpu-bench", RuntimeVersion: "v2.2.9",
		RegistrationTimeout: 5000, RequestTimeout: 2000}); err != nil {
		return fmt.Errorf("failed to configure the NRI plugin: %w", err)
	}
	if _, err := f.plugin.Synchronize(ctx, &api.SynchronizeRequest{}); err != nil {
		return fmt.Errorf("failed to synchronize the NRI plugin: %w", err)
	}
	return nil
}

// Stop closes the connection and the socket.
func (f *FakeRuntime) Stop() {
	if f.mux != nil {
		f.mux.Close()
	}
	f.l.Close()
}

// AddContainers creates and starts n containers, one pod each, the first
// withGPU of them asking for a GPU by annotation, and returns how long each
// CreateContainer round trip to the plugin took.
func (f *FakeRuntime) AddContainers(ctx context.Context, n, withGPU int) (Sample, error) {
	var took Sample
	for i := 0; i < n; i++ {
		pod := &api.PodSandbox{Id: fmt.Sprintf("sb%04d", i), Name: fmt.Sprintf("p%04d", i),
			Uid: fmt.Sprintf("uid-%04d", i), Namespace: Namespace, Annotations: map[string]string{}}
		if i < withGPU {
			pod.Annotations = annotation
		}
		c := &api.Container{Id: fmt.Sprintf("c%04d", i), PodSandboxId: pod.Id, Name: "app",
			State: api.ContainerState_CONTAINER_CREATED, Args: []string{"sleep", "86400"},
			Env: []string{"PATH=/usr/bin:/bin"}, Linux: &api.LinuxContainer{}}
		start := time.Now()
		if _, err := f.plugin.CreateContainer(ctx, &api.CreateContainerRequest{Pod: pod, Container: c}); err != nil {
			return nil, fmt.Errorf("NRI CreateContainer %d failed: %w", i, err)
		}
		took = append(took, time.Since(start))
		c.State, c.Pid = api.ContainerState_CONTAINER_RUNNING, uint32(100000+i)
		if _, err := f.plugin.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: pod, Container: c}); err != nil {
			return nil, fmt.Errorf("NRI PostStartContainer %d failed: %w", i, err)
		}
	}
	return took, nil
}

type runtimeService struct{ reg chan struct{} }

func (r runtimeService) RegisterPlugin(context.Context, *api.RegisterPluginRequest) (*api.Empty, error) {
	select {
	case r.reg <- struct{}{}:
	default:
	}
	return &api.Empty{}, nil
}

func (runtimeService) UpdateContainers(context.Context, *api.UpdateContainersRequest) (*api.UpdateContainersResponse, error) {
	return &api.UpdateContainersResponse{}, nil
}

var errNotRecorded = errors.New("hotgpud did not record every container")
