package dra

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

	"github.com/sirupsen/logrus"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

const node = "node-a"

func simInventory(t testing.TB, preset string) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate(preset))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func newLedger(t testing.TB) *ledger.Ledger {
	t.Helper()
	s, err := ledger.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func devices(r map[string][]resourceapi.Device) map[string]resourceapi.Device {
	out := map[string]resourceapi.Device{}
	for _, d := range r[node] {
		out[d.Name] = d
	}
	return out
}

func published(inv *gpu.Inventory, l *ledger.Ledger) map[string]resourceapi.Device {
	res := Resources(node, inv, l)
	pools := map[string][]resourceapi.Device{}
	for name, p := range res.Pools {
		for _, s := range p.Slices {
			pools[name] = append(pools[name], s.Devices...)
		}
	}
	return devices(pools)
}

func str(d resourceapi.Device, name resourceapi.QualifiedName) string {
	if a, ok := d.Attributes[name]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

func TestResourcesDescribeEachGPU(t *testing.T) {
	for _, preset := range []string{"pcie8", "dgxa100"} {
		t.Run(preset, func(t *testing.T) {
			inv := simInventory(t, preset)
			devs := published(inv, newLedger(t))
			if len(devs) != len(inv.GPUs) {
				t.Fatalf("published %d devices, want %d", len(devs), len(inv.GPUs))
			}
			for _, g := range inv.GPUs {
				d, ok := devs[DeviceName(&g)]
				if !ok {
					t.Fatalf("GPU %d not published", g.Index)
				}
				if str(d, "uuid") != g.UUID || str(d, "productName") != g.Name || *d.Attributes["index"].IntValue != int64(g.Index) {
					t.Errorf("device %s: attributes %v do not describe GPU %+v", d.Name, d.Attributes, g)
				}
				if str(d, "driverVersion") != inv.DriverVersion || str(d, "cudaVersion") != inv.CUDAVersion {
					t.Errorf("device %s: versions %v, want driver %s cuda %s", d.Name, d.Attributes, inv.DriverVersion, inv.CUDAVersion)
				}
				if mem := d.Capacity["memory"].Value; mem.Value() != int64(g.MemoryMiB)<<20 {
					t.Errorf("device %s: memory %s, want %d MiB", d.Name, mem.String(), g.MemoryMiB)
				}
			}
			// NVLink domains follow the peers: on pcie8 the NVLink pairs,
			// on dgxa100 one NVSwitch domain.
			for _, g := range inv.GPUs {
				for _, p := range g.Peers {
					a, b := devs[DeviceName(&g)], devs["gpu-"+itoa(p.Index)]
					same := str(a, "nvlinkDomain") == str(b, "nvlinkDomain") && str(a, "nvlinkDomain") != ""
					if linked := p.NVLinks > 0; linked && !same {
						t.Errorf("GPUs %d and %d are NVLinked but in domains %q and %q", g.Index, p.Index, str(a, "nvlinkDomain"), str(b, "nvlinkDomain"))
					}
				}
			}
			domains := map[string]int{}
			for _, d := range devs {
				domains[str(d, "nvlinkDomain")]++
			}
			want := map[string]int{"pcie8": 4, "dgxa100": 1}[preset]
			if len(domains) != want {
				t.Errorf("%d NVLink domains %v, want %d", len(domains), domains, want)
			}
		})
	}
}

func itoa(i int) string { return DeviceName(&gpu.GPU{Index: i})[len("gpu-"):] }

func TestResourcesLeaveOutGPUsOfOtherAllocators(t *testing.T) {
	inv := simInventory(t, "pcie8")
	l := newLedger(t)
	if err := l.Acquire(ledger.Holder{ContainerID: "c1"}, ledger.Attach, ledger.Active, inv.GPUs[2].UUID); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ledger.Holder{Token: "t"}, ledger.Kubelet, ledger.Active, inv.GPUs[4].UUID); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ledger.Holder{ClaimUID: "u1", Claim: "ns/c"}, ledger.DRA, ledger.Active, inv.GPUs[5].UUID); err != nil {
		t.Fatal(err)
	}
	devs := published(inv, l)
	for _, i := range []int{2, 4} {
		if _, ok := devs["gpu-"+itoa(i)]; ok {
			t.Errorf("GPU %d, held by another allocator, is published", i)
		}
	}
	if _, ok := devs["gpu-5"]; !ok {
		t.Error("GPU 5, held for a claim, left the pool: its allocation would dangle")
	}
	if len(devs) != 6 {
		t.Errorf("published %d devices, want 6", len(devs))
	}
}

type fixture struct {
	d   *Driver
	inv *gpu.Inventory
	l   *ledger.Ledger
	dir string
}

func newFixture(t testing.TB) *fixture {
	inv := simInventory(t, "pcie8")
	l := newLedger(t)
	dir := t.TempDir()
	spec := func(inv *gpu.Inventory) (*specs.Spec, error) { return cdi.Generate(inv) }
	d := New(Config{Node: node, CDIDir: dir}, l, func() *gpu.Inventory { return inv }, spec, logrus.NewEntry(logrus.New()))
	return &fixture{d: d, inv: inv, l: l, dir: dir}
}

func claim(uid string, devs ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "c-" + uid, UID: types.UID(uid)}}
	c.Status.Allocation = &resourceapi.AllocationResult{}
	for _, d := range devs {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: "gpu", Driver: DriverName, Pool: node, Device: d})
	}
	return c
}

func (f *fixture) prepare(t *testing.T, c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	t.Helper()
	res, err := f.d.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{c})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := res[c.UID]
	if !ok || len(res) != 1 {
		t.Fatalf("results %v, want one for claim %s", res, c.UID)
	}
	return r
}

func TestPrepareHoldsTheGPUAndWritesTheClaimsSpec(t *testing.T) {
	f := newFixture(t)
	c := claim("uid-1", "gpu-3")
	for range 2 { // kubelet may prepare again: idempotent
		r := f.prepare(t, c)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if len(r.Devices) != 1 || r.Devices[0].DeviceName != "gpu-3" || r.Devices[0].PoolName != node ||
			len(r.Devices[0].CDIDeviceIDs) != 1 || r.Devices[0].CDIDeviceIDs[0] != "nvidia.com/gpu=uid-1-0" {
			t.Fatalf("devices %+v, want gpu-3 as nvidia.com/gpu=uid-1-0", r.Devices)
		}
	}
	g, held := f.l.Lookup(f.inv.GPUs[3].UUID)
	if !held || g.Reason != ledger.DRA || g.Holder.ClaimUID != "uid-1" || g.Holder.Claim != "ml/c-uid-1" {
		t.Fatalf("ledger has %+v for GPU 3, want it held for the claim", g)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "hotgpu-dra-uid-1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "name: uid-1-0") || strings.Contains(string(b), f.inv.GPUs[2].UUID) {
		t.Errorf("claim spec does not define exactly the claim's device:\n%s", b)
	}
	// one ledger: live attach and annotations are refused the GPU
	err = f.l.Acquire(ledger.Holder{ContainerID: "c9"}, ledger.Attach, ledger.Pending, f.inv.GPUs[3].UUID)
	if !errors.Is(err, ledger.ErrHeld) || !strings.Contains(err.Error(), "ResourceClaim ml/c-uid-1") {
		t.Errorf("live attach of a claim's GPU: %v, want held by the claim", err)
	}

	for range 2 { // idempotent, and an unknown claim is no error
		res, err := f.d.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{{UID: c.UID}})
		if err != nil || res[c.UID] != nil || len(res) != 1 {
			t.Fatalf("unprepare: %v %v", res, err)
		}
	}
	if _, held := f.l.Lookup(f.inv.GPUs[3].UUID); held {
		t.Error("GPU 3 still held after unprepare")
	}
	if _, err := os.Stat(filepath.Join(f.dir, "hotgpu-dra-uid-1.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("claim spec still there after unprepare: %v", err)
	}
}

func TestPrepareRefusesAGPUAnotherAllocatorHolds(t *testing.T) {
	f := newFixture(t)
	if err := f.l.Acquire(ledger.Holder{Token: "t"}, ledger.Kubelet, ledger.Active, f.inv.GPUs[1].UUID); err != nil {
		t.Fatal(err)
	}
	before := f.l.Grants()
	r := f.prepare(t, claim("uid-2", "gpu-0", "gpu-1"))
	if r.Err == nil || !strings.Contains(r.Err.Error(), "kubelet") || !strings.Contains(r.Err.Error(), "ml/c-uid-2") {
		t.Fatalf("prepare of a kubelet-held GPU: %v, want a refusal naming the claim and the holder", r.Err)
	}
	if after := f.l.Grants(); len(after) != len(before) {
		t.Errorf("a refused claim changed the ledger: %v -> %v", before, after)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
		t.Errorf("a refused claim wrote %v", entries)
	}
}

func TestPrepareRefusesAnUnknownDevice(t *testing.T) {
	f := newFixture(t)
	if r := f.prepare(t, claim("uid-3", "gpu-42")); r.Err == nil || !strings.Contains(r.Err.Error(), "gpu-42") {
		t.Fatalf("prepare of an unknown device: %v", r.Err)
	}
}

func TestPrepareRefusalIsWrittenToTheClaim(t *testing.T) {
	f := newFixture(t)
	c := claim("uid-4", "gpu-1")
	cs := fake.NewClientset(c)
	f.d.claims = cs.ResourceV1()
	if err := f.l.Acquire(ledger.Holder{Token: "t"}, ledger.Kubelet, ledger.Active, f.inv.GPUs[1].UUID); err != nil {
		t.Fatal(err)
	}
	if r := f.prepare(t, c); r.Err == nil {
		t.Fatal("prepare of a kubelet-held GPU succeeded")
	}
	got, err := cs.ResourceV1().ResourceClaims("ml").Get(context.Background(), c.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Devices) != 1 || len(got.Status.Devices[0].Conditions) != 1 {
		t.Fatalf("claim status %+v, want one device with one condition", got.Status.Devices)
	}
	dev, cond := got.Status.Devices[0], got.Status.Devices[0].Conditions[0]
	if dev.Driver != DriverName || dev.Pool != node || dev.Device != "gpu-1" || cond.Type != ConditionReady ||
		cond.Status != metav1.ConditionFalse || cond.Reason != ReasonGPUHeld || !strings.Contains(cond.Message, "kubelet") {
		t.Errorf("claim device status %+v, want gpu-1 not Ready, held by kubelet", dev)
	}
	if got.Status.Allocation == nil || len(got.Status.Allocation.Devices.Results) != 1 {
		t.Errorf("the status write changed the allocation: %+v", got.Status.Allocation)
	}

	if _, err := f.l.ReleaseWhere(func(g ledger.Grant) bool { return g.Reason == ledger.Kubelet }); err != nil {
		t.Fatal(err)
	}
	if r := f.prepare(t, got); r.Err != nil {
		t.Fatal(r.Err)
	}
	got, err = cs.ResourceV1().ResourceClaims("ml").Get(context.Background(), c.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Devices) != 1 || len(got.Status.Devices[0].Conditions) != 1 ||
		got.Status.Devices[0].Conditions[0].Status != metav1.ConditionTrue || got.Status.Devices[0].Conditions[0].Reason != ReasonPrepared {
		t.Errorf("claim status %+v after a successful prepare, want gpu-1 Ready", got.Status.Devices)
	}
	writes := len(cs.Actions())
	if r := f.prepare(t, got); r.Err != nil { // kubelet prepares again
		t.Fatal(r.Err)
	}
	if n := len(cs.Actions()); n != writes {
		t.Errorf("a prepare of a Ready claim made %d API calls, want none", n-writes)
	}
}

func TestPrepareAndUnprepareAreObserved(t *testing.T) {
	f := newFixture(t)
	var ops []string
	f.d.cfg.Observe = func(op string, took time.Duration, err error) {
		ops = append(ops, fmt.Sprintf("%s %t", op, err == nil))
	}
	f.prepare(t, claim("uid-5", "gpu-0"))
	f.prepare(t, claim("uid-6", "gpu-42"))
	if _, err := f.d.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{{UID: "uid-5"}}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"dra-prepare true", "dra-prepare false", "dra-unprepare true"}; !slices.Equal(ops, want) {
		t.Errorf("observed %v, want %v", ops, want)
	}
}
