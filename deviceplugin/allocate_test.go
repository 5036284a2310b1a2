package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

func TestAllocate(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(f *fixture)
		ids      func(f *fixture) []string
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "two free GPUs", ids: func(f *fixture) []string { return []string{f.uuid(3), f.uuid(1)} }},
		{name: "re-allocation of an unclaimed kubelet grant",
			setup: func(f *fixture) {
				mustDo(f.ledger.Acquire(ledger.Holder{PodUID: "old-pod"}, ledger.Kubelet, ledger.Active, f.uuid(1)))
			},
			ids: func(f *fixture) []string { return []string{f.uuid(1)} }},
		{name: "unknown device", ids: func(f *fixture) []string { return []string{f.uuid(0), "GPU-nope"} },
			wantCode: codes.InvalidArgument, wantMsg: "not a GPU of this node"},
		{name: "index instead of UUID", ids: func(f *fixture) []string { return []string{"0"} },
			wantCode: codes.InvalidArgument, wantMsg: "not a GPU of this node"},
		{name: "unhealthy", setup: func(f *fixture) { f.health.Set(f.uuid(2), false, "test") },
			ids: func(f *fixture) []string { return []string{f.uuid(2)} }, wantCode: codes.FailedPrecondition, wantMsg: "unhealthy"},
		{name: "held by live attach",
			setup: func(f *fixture) { mustDo(f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.uuid(4))) },
			ids:   func(f *fixture) []string { return []string{f.uuid(5), f.uuid(4)} }, wantCode: codes.FailedPrecondition, wantMsg: "ml/dev/shell (attach)"},
		{name: "held by a running kubelet container",
			setup: func(f *fixture) { mustDo(f.ledger.Acquire(attached, ledger.Kubelet, ledger.Active, f.uuid(6))) },
			ids:   func(f *fixture) []string { return []string{f.uuid(6)} }, wantCode: codes.FailedPrecondition, wantMsg: "held by"},
		{name: "quarantined: the ledger's own wording",
			setup: func(f *fixture) {
				mustDo(f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.uuid(4)))
				mustDo(f.ledger.Quarantine(attached.ContainerID, "pid 42 holds it", f.uuid(4)))
			},
			ids: func(f *fixture) []string { return []string{f.uuid(4)} }, wantCode: codes.FailedPrecondition, wantMsg: "held by quarantine: pid 42 holds it"},
		{name: "MIG enabled: not a whole GPU",
			setup: func(f *fixture) { f.inv.GPUs[2].MIGEnabled = true },
			ids:   func(f *fixture) []string { return []string{f.uuid(2)} }, wantCode: codes.InvalidArgument, wantMsg: "a GPU in MIG mode is allocated by its MIG devices"},
		{name: "no devices", ids: func(*fixture) []string { return nil }, wantCode: codes.InvalidArgument},
		{name: "too many devices", ids: func(f *fixture) []string { return slices.Repeat([]string{f.uuid(0)}, maxIDs+1) },
			wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "dgxa100")
			if tt.setup != nil {
				tt.setup(f)
			}
			before := f.ledger.Grants()
			ids := tt.ids(f)
			resp, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
				ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}},
			})
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v, want %s containing %q", err, tt.wantCode, tt.wantMsg)
				}
				if got := f.ledger.Grants(); !slices.Equal(got, before) {
					t.Fatalf("a refused allocation changed the ledger: %+v -> %+v", before, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkResponse(t, f, resp, ids)
		})
	}
}

func checkResponse(t *testing.T, f *fixture, resp *pluginapi.AllocateResponse, ids []string) {
	t.Helper()
	if len(resp.ContainerResponses) != 1 {
		t.Fatalf("%d container responses, want 1", len(resp.ContainerResponses))
	}
	r := resp.ContainerResponses[0]
	if got := r.Envs[EnvVisibleDevices]; got != strings.Join(ids, ",") {
		t.Errorf("%s = %q, want %q", EnvVisibleDevices, got, strings.Join(ids, ","))
	}
	var cdi []string
	for _, d := range r.CdiDevices {
		cdi = append(cdi, d.Name)
	}
	for _, id := range ids {
		if !slices.Contains(cdi, "nvidia.com/gpu="+id) {
			t.Errorf("CDI devices %v lack nvidia.com/gpu=%s", cdi, id)
		}
		g, ok := f.ledger.Lookup(id)
		if !ok || g.Reason != ledger.Kubelet || g.Holder != (ledger.Holder{Token: r.Annotations[policy.AllocationAnnotation]}) || g.State != ledger.Active {
			t.Errorf("ledger grant of %s = %+v, want an unclaimed active kubelet allocation", id, g)
		}
	}
	if tok := r.Annotations[policy.AllocationAnnotation]; len(tok) != 32 {
		t.Errorf("allocation token annotation = %q, want 128 random bits in hex", tok)
	}
	if len(r.Devices) != 0 || len(r.Mounts) != 0 {
		t.Errorf("response names device nodes or mounts; CDI and the NRI plugin do that: %+v", r)
	}
}

func TestAllocateGate(t *testing.T) {
	f := newFixture(t, "pcie8", WithAllocateGate(func() error { return errors.New("ledger is being rebuilt") }))
	_, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{f.uuid(0)}}},
	})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "rebuilt") || len(f.ledger.Grants()) != 0 {
		t.Fatalf("err = %v, grants %v; want Unavailable and nothing recorded", err, f.ledger.Grants())
	}
}

func TestAllocatedGPUsAreClaimedByTheirContainer(t *testing.T) {
	f := newFixture(t, "dgxa100")
	resp, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{f.uuid(0)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another pod's container naming the GPU (env is forgeable) but without
	// the token kubelet put on the rightful container cannot claim it.
	thief := ledger.Holder{ContainerID: "thief", PodUID: "uid-thief", Token: "0123456789abcdef0123456789abcdef"}
	if err := f.ledger.Acquire(thief, ledger.Kubelet, ledger.Active, f.uuid(0)); err == nil {
		t.Fatal("a container without the allocation's token claimed it")
	}
	// What the NRI plugin does when the container arrives with the token.
	claimer := attached
	claimer.Token = resp.ContainerResponses[0].Annotations[policy.AllocationAnnotation]
	if err := f.ledger.Acquire(claimer, ledger.Kubelet, ledger.Active, f.uuid(0)); err != nil {
		t.Fatalf("container could not claim kubelet's allocation: %v", err)
	}
	if err := f.ledger.Acquire(ledger.Holder{ContainerID: "other"}, ledger.Attach, ledger.Active, f.uuid(0)); err == nil {
		t.Fatal("live attach took a GPU kubelet allocated")
	}
}

func TestGetPreferredAllocation(t *testing.T) {
	tests := []struct {
		name             string
		preset           string
		avail, must      []int
		size             int
		want             []int
		wantCode         codes.Code
		wantUnknownInReq bool
	}{
		// pcie8: NVLink pairs (0,1) (2,3) (4,5) (6,7); 0-3 share a PCIe switch tree.
		{name: "a pair", preset: "pcie8", avail: []int{0, 1, 2, 3, 4, 5, 6, 7}, size: 2, want: []int{0, 1}},
		{name: "must include picks its partner", preset: "pcie8", avail: []int{0, 1, 2, 3, 4, 5, 6, 7}, must: []int{5}, size: 2, want: []int{4, 5}},
		{name: "broken pair avoided", preset: "pcie8", avail: []int{0, 2, 3, 4}, size: 2, want: []int{2, 3}},
		{name: "four", preset: "pcie8", avail: []int{0, 1, 2, 3, 4, 5, 6, 7}, must: []int{6}, size: 4, want: []int{4, 5, 6, 7}},
		{name: "7 of 8", preset: "dgxa100", avail: []int{0, 1, 2, 3, 4, 5, 6, 7}, size: 7, want: []int{0, 1, 2, 3, 4, 5, 6}},
		{name: "too many", preset: "pcie8", avail: []int{0, 1}, size: 3, wantCode: codes.InvalidArgument},
		{name: "unknown id", preset: "pcie8", avail: []int{0, 1}, size: 1, wantUnknownInReq: true, wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.preset)
			ids := func(idx []int) []string {
				var out []string
				for _, i := range idx {
					out = append(out, f.uuid(i))
				}
				return out
			}
			req := &pluginapi.ContainerPreferredAllocationRequest{AvailableDeviceIDs: ids(tt.avail), MustIncludeDeviceIDs: ids(tt.must), AllocationSize: int32(tt.size)}
			if tt.wantUnknownInReq {
				req.AvailableDeviceIDs = append(req.AvailableDeviceIDs, "GPU-nope")
			}
			resp, err := f.p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{
				ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{req},
			})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err = %v, want code %s", err, tt.wantCode)
			}
			if err != nil {
				return
			}
			if got := resp.ContainerResponses[0].DeviceIDs; !slices.Equal(got, ids(tt.want)) {
				t.Fatalf("preferred = %v, want GPUs %v", got, tt.want)
			}
		})
	}
}

func mustDo(err error) {
	if err != nil {
		panic(err)
	}
}

// saveFails is a ledger store that cannot persist any more: every change
// is refused, so the ledger must stay as it was.
type saveFails struct{ ledger.Store }

func (saveFails) Save([]ledger.Grant) error { return errors.New("disk full") }

// A failed Allocate that replaces an old unclaimed allocation leaves the old
// one in place: the replacement is one durable change, or none.
func TestAllocateFailureKeepsTheLedger(t *testing.T) {
	f := newFixture(t, "dgxa100")
	store, err := ledger.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet, State: ledger.Active, Holder: ledger.Holder{Token: "old"}}
	if err := store.Save([]ledger.Grant{old}); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(saveFails{store})
	if err != nil {
		t.Fatal(err)
	}
	f.p.ledger = l
	_, err = f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{f.uuid(1), f.uuid(2)}}},
	})
	if status.Code(err) != codes.Internal {
		t.Fatalf("err = %v, want Internal", err)
	}
	if got := l.Grants(); len(got) != 1 || got[0].Holder.Token != "old" {
		t.Fatalf("ledger after a failed Allocate = %+v, want the old allocation only", got)
	}
}

// A GPU with MIG enabled is not advertised as a whole GPU: kubelet would
// hand it to a pod whose CUDA then sees no usable device (strategy none).
func TestDevicesSkipMIGEnabled(t *testing.T) {
	f := newFixture(t, "dgxa100")
	f.inv.GPUs[3].MIGEnabled = true
	var ids []string
	for _, d := range f.p.devices() {
		ids = append(ids, d.ID)
	}
	if slices.Contains(ids, f.uuid(3)) || len(ids) != len(f.inv.GPUs)-1 {
		t.Errorf("devices %v: want every GPU but the MIG-enabled %s", ids, f.uuid(3))
	}
}

// With WithNear naming the GPUs a holder pod's target holds, the preferred
// allocation of that size joins them best; of another size, or with no
// answer, it is plain topology.
func TestGetPreferredAllocationNear(t *testing.T) {
	for _, tt := range []struct {
		preset      string
		held        []int
		avail       []int
		size        int
		asked       int // the size near answers for
		want, plain []int
	}{
		{"pcie8", []int{4}, []int{0, 1, 2, 3, 5, 6, 7}, 1, 1, []int{5}, []int{0}},
		{"pcie8", []int{4, 5}, []int{0, 1, 2, 3, 6, 7}, 2, 2, []int{6, 7}, []int{0, 1}},
		{"dgxa100", []int{6}, []int{0, 1, 2, 3, 4, 5, 7}, 1, 1, []int{7}, []int{0}},
		{"dgxa100", []int{6}, []int{0, 1, 2, 3, 4, 5, 7}, 2, 1, []int{0, 1}, []int{0, 1}},
	} {
		t.Run(fmt.Sprintf("%s/held%v/size%d", tt.preset, tt.held, tt.size), func(t *testing.T) {
			var near []string
			f := newFixture(t, tt.preset, WithNear(func(size int) []string {
				if size != tt.asked {
					return nil
				}
				return near
			}))
			ids := func(idx []int) []string {
				var out []string
				for _, i := range idx {
					out = append(out, f.uuid(i))
				}
				return out
			}
			near = ids(tt.held)
			req := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
				{AvailableDeviceIDs: ids(tt.avail), AllocationSize: int32(tt.size)}}}
			resp, err := f.p.GetPreferredAllocation(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.ContainerResponses[0].DeviceIDs; !slices.Equal(got, ids(tt.want)) {
				t.Fatalf("preferred = %v, want GPUs %v", got, tt.want)
			}
			near = nil
			resp, err = f.p.GetPreferredAllocation(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.ContainerResponses[0].DeviceIDs; !slices.Equal(got, ids(tt.plain)) {
				t.Fatalf("with nothing near, preferred = %v, want GPUs %v", got, tt.plain)
			}
		})
	}
}
