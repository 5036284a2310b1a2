package deviceplugin

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/health"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// migInventory is the simulated dgxa100 with MIG layouts per GPU slot
// (the other GPUs whole).
func migInventory(t *testing.T, layouts map[string][]string) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for slot, profiles := range layouts {
		if err := p.Simulation().EnableMIG(slot, profiles...); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// mixed: GPU 0 in mixed profiles (0:0 3g.20gb, 0:1 2g.10gb, 0:2 and 0:3
// 1g.5gb), GPU 1 with two 1g.5gb (1:0, 1:1), GPUs 2-7 whole.
var mixed = map[string][]string{"0": {"3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"}, "1": {"1g.5gb", "1g.5gb"}}

func names(devs []*gpu.GPU) []string {
	out := make([]string, len(devs))
	for i, g := range devs {
		out[i] = g.ID()
	}
	return out
}

func TestStrategies(t *testing.T) {
	inv := migInventory(t, mixed)
	all1g := map[string][]string{}
	for _, slot := range []string{"0", "1", "2", "3", "4", "5", "6", "7"} {
		all1g[slot] = []string{"1g.5gb", "1g.5gb", "1g.5gb"}
	}
	uniform := migInventory(t, all1g)
	whole := migInventory(t, nil)
	tests := []struct {
		name     string
		strategy string
		inv      *gpu.Inventory
		want     map[string][]string // resource -> devices
	}{
		{"none: MIG GPUs are not advertised whole", "none", inv,
			map[string][]string{"nvidia.com/gpu": {"2", "3", "4", "5", "6", "7"}}},
		{"mixed: one resource per profile", "mixed", inv, map[string][]string{
			"nvidia.com/gpu":         {"2", "3", "4", "5", "6", "7"},
			"nvidia.com/mig-1g.5gb":  {"0:2", "0:3", "1:0", "1:1"},
			"nvidia.com/mig-2g.10gb": {"0:1"},
			"nvidia.com/mig-3g.20gb": {"0:0"},
		}},
		{"single: a mixed node advertises nothing", "single", inv, map[string][]string{"nvidia.com/gpu": {}}},
		{"single: one profile everywhere", "single", uniform, map[string][]string{"nvidia.com/gpu": names(uniform.Instances("1g.5gb"))}},
		{"single: no MIG", "single", whole, map[string][]string{"nvidia.com/gpu": {"0", "1", "2", "3", "4", "5", "6", "7"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Resources(tt.strategy, "nvidia.com/gpu", DefaultMIGPrefix, tt.inv)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, r := range res {
				got[r.Name] = append([]string{}, names(r.Devices(tt.inv))...)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("resources = %v, want %v", got, tt.want)
			}
			for name, want := range tt.want {
				if !slices.Equal(got[name], want) {
					t.Errorf("%s = %v, want %v", name, got[name], want)
				}
			}
		})
	}
	if len(uniform.Instances("")) != 24 || SingleProblem(uniform) != "" || SingleProblem(inv) == "" {
		t.Fatalf("single on a uniform node: %q; on a mixed one: %q", SingleProblem(uniform), SingleProblem(inv))
	}
	if _, err := Resources("bogus", "nvidia.com/gpu", DefaultMIGPrefix, inv); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

// migFixture is the plugin of nvidia.com/mig-1g.5gb under mixed.
func migFixture(t *testing.T) *fixture {
	t.Helper()
	inv := migInventory(t, mixed)
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	l.SetOverlaps(inv.Overlapping)
	h := health.New()
	p, err := New(&staticInventory{inv: inv}, l, WithHealth(h), WithResourceName("nvidia.com/mig-1g.5gb"), WithDevices(MIGDevices("1g.5gb")))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{p: p, inv: inv, ledger: l, health: h}
}

func TestAllocateMIGDevice(t *testing.T) {
	f := migFixture(t)
	mig := f.inv.GPUs[1].MIG[0]
	resp, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{mig.UUID}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.ContainerResponses[0]
	if len(c.CdiDevices) != 1 || c.CdiDevices[0].Name != "nvidia.com/gpu="+mig.UUID || c.Envs[EnvVisibleDevices] != mig.UUID {
		t.Fatalf("response = %+v, want the MIG device's CDI name and UUID", c)
	}
	if g, ok := f.ledger.Lookup(mig.UUID); !ok || g.Reason != ledger.Kubelet {
		t.Fatalf("ledger = %v, want the MIG device held by kubelet", f.ledger.Grants())
	}
	if _, held := f.ledger.Lookup(f.inv.GPUs[1].UUID); held || f.ledger.HeldBy(f.inv.GPUs[1].UUID) == "" {
		t.Fatal("the parent must be busy, not held, while its MIG device is")
	}
	// a GPU, or a MIG device of another profile, is not this resource's
	for _, id := range []string{f.inv.GPUs[3].UUID, f.inv.GPUs[0].MIG[0].UUID} {
		_, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
			ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}},
		})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "nvidia.com/mig-1g.5gb") {
			t.Fatalf("Allocate(%s) = %v, want InvalidArgument", id, err)
		}
	}
}

func TestMIGDeviceHealthFollowsParent(t *testing.T) {
	f := migFixture(t)
	state := func() map[string]string {
		out := map[string]string{}
		for _, d := range f.p.devices() {
			g, _ := f.inv.ByUUID(d.ID)
			out[g.ID()] = d.Health
		}
		return out
	}
	f.health.Set(f.inv.GPUs[0].UUID, false, "Xid 48")
	if err := f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.inv.GPUs[1].MIG[1].UUID); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"0:2": pluginapi.Unhealthy, "0:3": pluginapi.Unhealthy, "1:0": pluginapi.Healthy, "1:1": pluginapi.Unhealthy}
	if got := state(); len(got) != len(want) || got["0:2"] != want["0:2"] || got["0:3"] != want["0:3"] || got["1:0"] != want["1:0"] || got["1:1"] != want["1:1"] {
		t.Fatalf("device states = %v, want %v (Xid on GPU 0; 1:1 live-attached)", got, want)
	}
	_, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{f.inv.GPUs[0].MIG[3].UUID}}},
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Allocate of a MIG device of an unhealthy GPU = %v, want FailedPrecondition", err)
	}
}

func TestPreferredMIGAllocation(t *testing.T) {
	f := migFixture(t)
	ids := func(names ...string) []string {
		var out []string
		for _, n := range names {
			g, err := f.inv.Lookup(n)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, g.UUID)
		}
		return out
	}
	resp, err := f.p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs: ids("1:1", "0:3", "1:0", "0:2"), MustIncludeDeviceIDs: ids("1:1"), AllocationSize: 2,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.ContainerResponses[0].DeviceIDs, ids("1:1", "0:2"); !slices.Equal(got, want) {
		t.Fatalf("preferred = %v, want %v", got, want)
	}
}

// TestRefreshSendsANewMIGLayout: after a MIG layout change the plugin of a
// profile tells kubelet its new devices at Refresh, not at the next resync.
func TestRefreshSendsANewMIGLayout(t *testing.T) {
	dir := shortDir(t)
	k := startFakeKubelet(t, dir)
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Simulation().EnableMIG("0", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	read := func() *gpu.Inventory {
		inv, err := p.Inventory()
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	inv := &staticInventory{inv: read()}
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	plug, err := New(inv, l, WithKubeletDir(dir), WithRetry(50*time.Millisecond), WithResync(time.Hour),
		WithResourceName("nvidia.com/mig-1g.5gb"), WithDevices(MIGDevices("1g.5gb")))
	if err != nil {
		t.Fatal(err)
	}
	runPlugin(t, &fixture{p: plug})
	k.waitRegistered(t)
	k.waitDevices(t, "two 1g.5gb", func(m map[string]string) bool { return len(m) == 2 })
	if err := p.Simulation().EnableMIG("0", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv.mu.Lock()
	inv.inv = read()
	inv.mu.Unlock()
	plug.Refresh()
	k.waitDevices(t, "three 1g.5gb after the layout change", func(m map[string]string) bool { return len(m) == 3 })
}
