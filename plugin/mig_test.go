package plugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

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
