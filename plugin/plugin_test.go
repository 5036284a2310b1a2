package plugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

type staticInventory struct{ inv *gpu.Inventory }

func (s staticInventory) Inventory() *gpu.Inventory { return s.inv }

func testInventory(n int) *gpu.Inventory {
	inv := &gpu.Inventory{Control: []gpu.DeviceNode{
		{Path: "/dev/nvidiactl", Major: 195, Minor: 255},
		{Path: "/dev/nvidia-uvm", Major: 511, Minor: 0},
		{Path: "/dev/nvidia-uvm-tools", Major: 511, Minor: 1},
	}}
	for i := 0; i < n; i++ {
		inv.GPUs = append(inv.GPUs, gpu.GPU{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i)})
	}
	return inv
}

type fixture struct {
	p   *Plugin
	l   *ledger.Ledger
	inv *gpu.Inventory
}

func newFixture(t testing.TB, n int) *fixture {
	t.Helper()
	return newFixtureIn(t, n, t.TempDir())
}

func newFixtureIn(t testing.TB, n int, stateDir string) *fixture {
	t.Helper()
	store, err := ledger.NewFileStore(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(store)
	if err != nil {
		t.Fatal(err)
	}
	inv := testInventory(n)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	p, err := New(staticInventory{inv}, l, registry.New(),
		WithPolicy(policy.Policy{Namespaces: []string{"ml"}, MaxPerContainer: 4}),
		WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{p: p, l: l, inv: inv}
}

func pod(ns, name string, ann map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: "sb-" + name, Name: name, Namespace: ns, Uid: "uid-" + name, Annotations: ann}
}

func ctr(id, name string, env ...string) *api.Container {
	return &api.Container{Id: id, Name: name, PodSandboxId: "sb-x", Env: env, Linux: &api.LinuxContainer{}}
}

func devicePaths(adj *api.ContainerAdjustment) []string {
	var out []string
	for _, d := range adj.GetLinux().GetDevices() {
		out = append(out, fmt.Sprintf("%s=c%d:%d", d.Path, d.Major, d.Minor))
	}
	return out
}

func envOf(adj *api.ContainerAdjustment, key string) string {
	for _, e := range adj.GetEnv() {
		if e.Key == key {
			return e.Value
		}
	}
	return ""
}

func TestCreateContainerAnnotation(t *testing.T) {
	key := policy.AnnotationKey("train")
	tests := []struct {
		name      string
		ns        string
		value     string
		held      []int // GPUs held by someone else first
		wantNodes []string
		wantErr   string
	}{
		{name: "count", ns: "ml", value: "2", wantNodes: []string{"/dev/nvidia0=c195:0", "/dev/nvidia1=c195:1"}},
		{name: "count skips held", ns: "ml", value: "1", held: []int{0}, wantNodes: []string{"/dev/nvidia1=c195:1"}},
		{name: "by index list", ns: "ml", value: "2,3", wantNodes: []string{"/dev/nvidia2=c195:2", "/dev/nvidia3=c195:3"}},
		{name: "by uuid", ns: "ml", value: "GPU-00000003-0000-0000-0000-000000000000", wantNodes: []string{"/dev/nvidia3=c195:3"}},
		{name: "not a number", ns: "ml", value: "two", wantErr: "not a number"},
		{name: "namespace not allowed", ns: "default", value: "1", wantErr: "namespace not allowed"},
		{name: "missing GPU", ns: "ml", value: "9,1", wantErr: "GPU 9 does not exist"},
		{name: "one GPU named twice", ns: "ml", value: "0,GPU-00000000-0000-0000-0000-000000000000", wantErr: "GPU 0 named twice"},
		{name: "not enough free", ns: "ml", value: "2", held: []int{0, 1, 2}, wantErr: "2 requested, 1 free"},
		{name: "named GPU held", ns: "ml", value: "1,2", held: []int{2}, wantErr: "GPU 2 is held by"},
		{name: "over the limit", ns: "ml", value: "5", wantErr: "at most 4 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 4)
			for _, i := range tt.held {
				if err := f.l.Acquire(ledger.Holder{ContainerID: "other"}, ledger.Attach, ledger.Active, f.inv.GPUs[i].UUID); err != nil {
					t.Fatal(err)
				}
			}
			before := f.l.Grants()
			adj, _, err := f.p.CreateContainer(context.Background(), pod(tt.ns, "p", map[string]string{key: tt.value}), ctr("c1", "train"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), key) {
					t.Fatalf("error = %v, want one naming %s and %q", err, key, tt.wantErr)
				}
				if got := f.l.Grants(); !slices.EqualFunc(got, before, func(a, b ledger.Grant) bool { return a == b }) {
					t.Fatalf("ledger changed on a refused request: %v -> %v", before, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			nodes := devicePaths(adj)
			want := append(tt.wantNodes, "/dev/nvidiactl=c195:255", "/dev/nvidia-uvm=c511:0", "/dev/nvidia-uvm-tools=c511:1")
			if !slices.Equal(nodes, want) {
				t.Fatalf("nodes = %v, want %v", nodes, want)
			}
			held := f.l.Container("c1")
			if len(held) != len(tt.wantNodes) {
				t.Fatalf("ledger holds %v for c1", held)
			}
			var uuids []string
			for _, g := range held {
				uuids = append(uuids, g.GPU)
				if g.Reason != ledger.Annotation || g.Holder.PodNamespace != tt.ns || g.Holder.Container != "train" {
					t.Errorf("grant = %+v", g)
				}
			}
			if got := envOf(adj, "NVIDIA_VISIBLE_DEVICES"); got != strings.Join(uuids, ",") {
				t.Errorf("NVIDIA_VISIBLE_DEVICES = %q, want %q", got, strings.Join(uuids, ","))
			}
		})
	}
}

func TestNoRequestNoAdjustment(t *testing.T) {
	f := newFixture(t, 2)
	adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "p", nil), ctr("c1", "app", "NVIDIA_VISIBLE_DEVICES=all"))
	if err != nil || adj != nil {
		t.Fatalf("adj = %v, err = %v: an image's NVIDIA_VISIBLE_DEVICES=all must not grant GPUs", adj, err)
	}
	if len(f.l.Grants()) != 0 {
		t.Fatal("ledger changed")
	}
}

func TestKubeletAllocationByEnv(t *testing.T) {
	f := newFixture(t, 4)
	g1 := f.inv.GPUs[1].UUID
	// What the device plugin records at Allocate; kubelet puts the token on
	// the container it allocated for.
	const token = "5f0c8a0e1d2b3c4d5e6f708192a3b4c5"
	if err := f.l.Acquire(ledger.Holder{Token: token}, ledger.Kubelet, ledger.Active, g1); err != nil {
		t.Fatal(err)
	}
	// A container of another pod that only sets the env is refused.
	_, _, err := f.p.CreateContainer(context.Background(), pod("default", "thief", nil), ctr("c0", "app", "HOTGPU_VISIBLE_DEVICES="+g1))
	if err == nil || !strings.Contains(err.Error(), "kubelet did not allocate") {
		t.Fatalf("a container without the allocation token got the GPU: %v", err)
	}
	c1 := ctr("c1", "app", "HOTGPU_VISIBLE_DEVICES="+g1)
	c1.Annotations = map[string]string{policy.AllocationAnnotation: token}
	adj, _, err := f.p.CreateContainer(context.Background(), pod("default", "p", nil), c1)
	if err != nil {
		t.Fatal(err)
	}
	if got := devicePaths(adj); got[0] != "/dev/nvidia1=c195:1" {
		t.Fatalf("nodes = %v", got)
	}
	if g, _ := f.l.Lookup(g1); g.Holder.ContainerID != "c1" || g.Reason != ledger.Kubelet {
		t.Fatalf("grant = %+v", g)
	}
	// A second container naming an unallocated GPU is refused.
	_, _, err = f.p.CreateContainer(context.Background(), pod("default", "q", nil), ctr("c2", "app", "HOTGPU_VISIBLE_DEVICES=2"))
	if err == nil || !strings.Contains(err.Error(), "kubelet did not allocate") {
		t.Fatalf("err = %v", err)
	}
	// And one naming the GPU kubelet gave c1 is refused too.
	_, _, err = f.p.CreateContainer(context.Background(), pod("default", "q", nil), ctr("c3", "app", "HOTGPU_VISIBLE_DEVICES="+g1))
	if err == nil {
		t.Fatal("second container took a kubelet-allocated GPU")
	}
}

func TestCDIDevicesAreRecorded(t *testing.T) {
	f := newFixture(t, 4)
	c := ctr("c1", "app")
	c.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=2"}, {Name: "other.com/x=1"}}
	adj, _, err := f.p.CreateContainer(context.Background(), pod("default", "p", nil), c)
	if err != nil || adj != nil {
		t.Fatalf("adj = %v, err = %v (CDI devices are injected by the runtime)", adj, err)
	}
	if g, ok := f.l.Lookup(f.inv.GPUs[2].UUID); !ok || g.Holder.ContainerID != "c1" {
		t.Fatalf("CDI GPU not recorded: %+v", g)
	}
	c2 := ctr("c2", "app")
	c2.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=2"}}
	if _, _, err := f.p.CreateContainer(context.Background(), pod("default", "q", nil), c2); err == nil {
		t.Fatal("two containers got GPU 2 through CDI")
	}
}

func TestRemoveReleasesAndSynchronizeReconciles(t *testing.T) {
	f := newFixture(t, 4)
	ann := map[string]string{policy.AnnotationKey("a"): "1"}
	ctx := context.Background()
	p1 := pod("ml", "p1", ann)
	if _, _, err := f.p.CreateContainer(ctx, p1, ctr("c1", "a")); err != nil {
		t.Fatal(err)
	}
	if err := f.p.RemoveContainer(ctx, p1, ctr("c1", "a")); err != nil {
		t.Fatal(err)
	}
	if len(f.l.Grants()) != 0 {
		t.Fatalf("remove left %v", f.l.Grants())
	}

	// c2 is live, c3 vanished while hotgpud was away, c4 runs with GPU 3 in
	// its spec but the ledger lost it.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.l.Acquire(ledger.Holder{ContainerID: "c2"}, ledger.Attach, ledger.Active, f.inv.GPUs[0].UUID))
	must(f.l.Acquire(ledger.Holder{ContainerID: "c3"}, ledger.Annotation, ledger.Active, f.inv.GPUs[1].UUID))
	sb := &api.PodSandbox{Id: "sb", Uid: "u", Namespace: "ml", Name: "p"}
	c4 := &api.Container{Id: "c4", PodSandboxId: "sb", Name: "x", State: api.ContainerState_CONTAINER_RUNNING,
		Linux: &api.LinuxContainer{Devices: []*api.LinuxDevice{{Path: "/dev/nvidia3", Type: "c", Major: 195, Minor: 3}, {Path: "/dev/nvidiactl", Type: "c", Major: 195, Minor: 255}}}}
	c2 := &api.Container{Id: "c2", PodSandboxId: "sb", State: api.ContainerState_CONTAINER_RUNNING}
	if _, err := f.p.Synchronize(ctx, []*api.PodSandbox{sb}, []*api.Container{c2, c4}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range f.l.Grants() {
		got[g.GPU] = g.Holder.ContainerID
	}
	want := map[string]string{f.inv.GPUs[0].UUID: "c2", f.inv.GPUs[3].UUID: "c4"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after sync ledger = %v, want %v", got, want)
	}
	if !f.p.registry.Has("c4") || f.p.registry.Has("c1") {
		t.Fatal("registry not replaced on sync")
	}
}

// CDI "all" names the GPUs the spec's "all" device carries: not a lost
// one, which has no node in the spec and which the ledger must not record
// as held by the container (it would stay held once the GPU is back).
func TestCDIAllSkipsLostGPUs(t *testing.T) {
	f := newFixture(t, 4)
	f.inv.GPUs[1].Lost = "GPU is lost"
	c := ctr("c1", "app")
	c.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=all"}}
	if _, _, err := f.p.CreateContainer(context.Background(), pod("default", "p", nil), c); err != nil {
		t.Fatal(err)
	}
	for i, g := range f.inv.GPUs {
		_, held := f.l.Lookup(g.UUID)
		if held != (i != 1) {
			t.Errorf("GPU %d (lost %q): held = %v", i, g.Lost, held)
		}
	}
}
