package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet serves the Registration service on dir/kubelet.sock and, like
// kubelet, opens ListAndWatch on every plugin that registers.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir     string
	srv     *grpc.Server
	regs    chan *pluginapi.RegisterRequest
	updates chan []*pluginapi.Device
}

func startFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{dir: dir, srv: grpc.NewServer(), regs: make(chan *pluginapi.RegisterRequest, 8), updates: make(chan []*pluginapi.Device, 64)}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	ln, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = k.srv.Serve(ln) }()
	t.Cleanup(k.srv.Stop)
	return k
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.regs <- r
	go k.watch(r.Endpoint)
	return &pluginapi.Empty{}, nil
}

func (k *fakeKubelet) watch(endpoint string) {
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		return
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		k.updates <- resp.Devices
	}
}

// restart does what a kubelet restart does to the dir: stop serving,
// delete every socket, serve kubelet.sock anew.
func (k *fakeKubelet) restart(t *testing.T) *fakeKubelet {
	t.Helper()
	k.srv.Stop()
	entries, _ := os.ReadDir(k.dir)
	for _, e := range entries {
		_ = os.Remove(filepath.Join(k.dir, e.Name()))
	}
	return startFakeKubelet(t, k.dir)
}

func (k *fakeKubelet) waitRegistered(t *testing.T) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.regs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("plugin did not register with kubelet")
		return nil
	}
}

// waitDevices waits for a device list for which ok holds.
func (k *fakeKubelet) waitDevices(t *testing.T, what string, ok func(map[string]string) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case devs := <-k.updates:
			m := map[string]string{}
			for _, d := range devs {
				m[d.ID] = d.Health
			}
			if ok(m) {
				return
			}
		case <-deadline:
			t.Fatalf("kubelet never saw %s", what)
		}
	}
}

func runPlugin(t *testing.T, f *fixture) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// shortDir is a temp dir whose socket paths fit in 107 bytes.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hgdp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
