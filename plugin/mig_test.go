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

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// An annotation names a MIG device ("0:1" or its MIG UUID): the container
// gets the parent's node and exactly that instance's caps nodes, and the
// ledger holds the instance, so its parent and siblings follow the rule.
func TestAnnotationMIGDevice(t *testing.T) {
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Simulation().EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	l.SetOverlaps(inv.Overlapping)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	plug, err := New(staticInventory{inv}, l, registry.New(),
		WithPolicy(policy.Policy{Namespaces: []string{"ml"}, MaxPerContainer: 2}), WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	create := func(id, value string) ([]string, error) {
		adj, _, err := plug.CreateContainer(context.Background(),
			pod("ml", "p-"+id, map[string]string{policy.AnnotationKey("app"): value}), ctr(id, "app"))
		return devicePaths(adj), err
	}
	mig := inv.GPUs[0].MIG[1]
	nodes, err := create("c1", "0:1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/dev/nvidia0=c195:0"}
	for _, c := range mig.Caps {
		want = append(want, fmt.Sprintf("%s=c%d:%d", c.Path, c.Major, c.Minor))
	}
	if !slices.Equal(nodes[:3], want) {
		t.Fatalf("nodes = %v, want %v and the control nodes", nodes, want)
	}
	for _, n := range nodes[3:] {
		if strings.HasPrefix(n, "/dev/nvidia-caps/") {
			t.Fatalf("another caps node given: %v", nodes)
		}
	}
	if g, ok := l.Lookup(mig.UUID); !ok || g.Holder.ContainerID != "c1" {
		t.Fatalf("ledger: %v, want the instance held by c1", l.Grants())
	}
	if _, err := create("c2", inv.GPUs[0].UUID); err == nil || !strings.Contains(err.Error(), mig.UUID) {
		t.Fatalf("GPU 0 whole while 0:1 is held: %v, want a refusal naming %s", err, mig.UUID)
	}
	if _, err := create("c3", mig.UUID); err == nil {
		t.Fatal("0:1 given twice")
	}
	if _, err := create("c4", inv.GPUs[0].MIG[2].UUID+",0:3"); err != nil {
		t.Fatalf("siblings 0:2 and 0:3 beside a held 0:1: %v", err)
	}
}

// TestSynchronizeRerecordsMIGDevice: a running container whose spec has a
// MIG device (its GPU's node and the device's caps nodes) is re-recorded
// as holding that MIG device at Synchronize (a ledger rebuilt from a
// corrupt file), never its whole GPU, which would take the GPU's other MIG
// devices from everyone.
func TestSynchronizeRerecordsMIGDevice(t *testing.T) {
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Simulation().EnableMIG("0", "3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"); err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	l.SetOverlaps(inv.Overlapping)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	plug, err := New(staticInventory{inv}, l, registry.New(), WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	mig := inv.GPUs[0].MIG[1]
	devs := []*api.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0}, {Path: "/dev/nvidiactl", Type: "c", Major: 195, Minor: 255}}
	for _, c := range mig.Caps {
		devs = append(devs, &api.LinuxDevice{Path: c.Path, Type: "c", Major: c.Major, Minor: c.Minor})
	}
	// a second container with GPU 1 whole, as before
	devs1 := []*api.LinuxDevice{{Path: "/dev/nvidia1", Type: "c", Major: 195, Minor: 1}}
	sb := &api.PodSandbox{Id: "sb", Uid: "u", Namespace: "ml", Name: "p"}
	running := func(id string, d []*api.LinuxDevice) *api.Container {
		return &api.Container{Id: id, PodSandboxId: "sb", Name: id, State: api.ContainerState_CONTAINER_RUNNING, Linux: &api.LinuxContainer{Devices: d}}
	}
	// a third container got MIG device 0:2 by annotation: it has its nodes,
	// so its grant is no stale one
	ann := inv.GPUs[0].MIG[2]
	devs3 := []*api.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0}}
	for _, c := range ann.Caps {
		devs3 = append(devs3, &api.LinuxDevice{Path: c.Path, Type: "c", Major: c.Major, Minor: c.Minor})
	}
	if err := l.Acquire(ledger.Holder{ContainerID: "c3", PodUID: "u"}, ledger.Annotation, ledger.Active, ann.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := plug.Synchronize(context.Background(), []*api.PodSandbox{sb}, []*api.Container{running("c1", devs), running("c2", devs1), running("c3", devs3)}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range l.Grants() {
		got[g.GPU] = g.Holder.ContainerID
	}
	want := map[string]string{mig.UUID: "c1", inv.GPUs[1].UUID: "c2", ann.UUID: "c3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after sync the ledger holds %v, want %v (MIG device 0:1, not GPU 0)", got, want)
	}
}
