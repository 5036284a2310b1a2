package plugin

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// fakeHolders confirms one holder pod: namespace/name of attachment uid.
type fakeHolders struct{ ns, name, uid string }

func (f fakeHolders) IsHolder(ns, name, _, uid string) bool {
	return ns == f.ns && name == f.name && uid == f.uid
}

// holderContainer is a pause container kubelet allocated GPU 1 to, in a
// pod that names attachment uid as the one it holds for.
func holderContainer(f *fixture, t *testing.T, podName, uid string) (*api.PodSandbox, *api.Container) {
	t.Helper()
	g1 := f.inv.GPUs[1]
	const token = "0123456789abcdef0123456789abcdef"
	if err := f.l.Acquire(ledger.Holder{Token: token}, ledger.Kubelet, ledger.Active, g1.UUID); err != nil {
		t.Fatal(err)
	}
	c := ctr("c-"+podName, "holder", "HOTGPU_VISIBLE_DEVICES="+g1.UUID)
	c.Annotations = map[string]string{policy.AllocationAnnotation: token}
	c.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=" + g1.UUID}}
	// what the runtime injected for the CDI device
	c.Linux.Devices = []*api.LinuxDevice{{Path: "/dev/nvidia1", Type: "c", Major: 195, Minor: 1}}
	return pod("team-a", podName, map[string]string{policy.HolderAnnotation: uid}), c
}

func TestConfirmedHolderGetsNoGPU(t *testing.T) {
	f := newFixture(t, 4)
	f.p.SetHolders(fakeHolders{"team-a", "holder-a1", "att-uid"})
	p, c := holderContainer(f, t, "holder-a1", "att-uid")
	adj, _, err := f.p.CreateContainer(context.Background(), p, c)
	if err != nil {
		t.Fatal(err)
	}
	removed := adj.GetLinux().GetDevices()
	if len(removed) != 1 || removed[0].Path != "-/dev/nvidia1" {
		t.Fatalf("devices adjusted %v, want /dev/nvidia1 removed", devicePaths(adj))
	}
	if !slices.ContainsFunc(adj.GetEnv(), func(e *api.KeyValue) bool { return e.Key == "-"+policy.EnvNVIDIA }) {
		t.Fatalf("env %v: %s not removed", adj.GetEnv(), policy.EnvNVIDIA)
	}
	// the allocation stays the holder pod's, for the agent to move
	if g, _ := f.l.Lookup(f.inv.GPUs[1].UUID); g.Reason != ledger.Kubelet || g.Holder.PodUID != p.Uid {
		t.Fatalf("grant = %+v, want the holder pod's kubelet allocation", g)
	}
}

func TestUnconfirmedHolderAnnotationIgnored(t *testing.T) {
	for name, holders := range map[string]Holders{
		"no agent":         nil,
		"other attachment": fakeHolders{"team-a", "holder-a1", "another-uid"},
		"other pod":        fakeHolders{"team-a", "someone-else", "att-uid"},
		"other namespace":  fakeHolders{"team-b", "holder-a1", "att-uid"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 4)
			if holders != nil {
				f.p.SetHolders(holders)
			}
			p, c := holderContainer(f, t, "holder-a1", "att-uid")
			adj, _, err := f.p.CreateContainer(context.Background(), p, c)
			if err != nil {
				t.Fatal(err)
			}
			// CDI: the runtime injects the GPU and hotgpu takes nothing away
			if adj != nil {
				t.Fatalf("a pod that only claims to be a holder was adjusted: %v", adj)
			}
		})
	}
}

// A holder container that kubelet creates again after its GPU was moved
// into the attachment's target (the pause process died, the node
// rebooted...) finds the allocation realised there: it starts with no GPU,
// and the target keeps it. Refused as "held" it would fail for good.
// Kubelet names the GPU by CDI device or by env (HOTGPU_VISIBLE_DEVICES with
// the allocation's token), as the device plugin answered.
func TestRecreatedHolderStartsWithoutItsMovedGPU(t *testing.T) {
	for _, by := range []string{"cdi", "env"} {
		t.Run(by, func(t *testing.T) { testRecreatedHolder(t, by == "cdi") })
	}
}

func testRecreatedHolder(t *testing.T, cdi bool) {
	f := newFixture(t, 4)
	f.p.SetHolders(fakeHolders{"team-a", "holder-a1", "att-uid"})
	p, c := holderContainer(f, t, "holder-a1", "att-uid")
	if !cdi {
		c.CDIDevices = nil
	}
	if _, _, err := f.p.CreateContainer(context.Background(), p, c); err != nil {
		t.Fatal(err)
	}
	g1 := f.inv.GPUs[1].UUID
	target := ledger.Holder{ContainerID: "target", PodUID: "target-uid", Realises: p.Uid}
	if err := f.l.Acquire(target, ledger.Attach, ledger.Active, g1); err != nil {
		t.Fatalf("move: %v", err)
	}
	c.Id = "c-holder-a1-again"
	adj, _, err := f.p.CreateContainer(context.Background(), p, c)
	if err != nil {
		t.Fatalf("the re-created holder container was refused: %v", err)
	}
	if removed := adj.GetLinux().GetDevices(); len(removed) != 1 || removed[0].Path != "-/dev/nvidia1" {
		t.Fatalf("devices adjusted %v, want /dev/nvidia1 removed", devicePaths(adj))
	}
	if g, _ := f.l.Lookup(g1); g.Holder.ContainerID != "target" || g.Reason != ledger.Attach {
		t.Fatalf("grant = %+v, want the target's still", g)
	}

	// an unconfirmed pod naming the same attachment gets nothing of it
	f.p.SetHolders(fakeHolders{"team-a", "holder-a1", "another-uid"})
	c.Id = "c-holder-a1-unconfirmed"
	if _, _, err := f.p.CreateContainer(context.Background(), p, c); err == nil {
		t.Fatal("an unconfirmed holder pod's container was created beside the target's grant")
	}
}
