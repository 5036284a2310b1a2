package plugin

import (
	"context"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// A container that stopped while hotgpud was away (the runtime lists no
// exited container) keeps its pod's kubelet allocation, exactly as
// StopContainer leaves it, and the container kubelet restarts with the
// same allocation gets it; what else it held, and what a pod that is gone
// held, is released.
func TestSynchronizeKeepsKubeletGPUsOfStoppedContainers(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	crash := &api.PodSandbox{Id: "sb-crash", Uid: "uid-crash", Namespace: "default", Name: "crash"}
	stopped := ledger.Holder{ContainerID: "c1", Container: "main", PodNamespace: "default", PodName: "crash", PodUID: "uid-crash", Token: "tok"}
	gone := ledger.Holder{ContainerID: "g1", PodNamespace: "default", PodName: "gone", PodUID: "uid-gone", Token: "tok2"}
	must(f.l.Acquire(ledger.Holder{Token: "tok"}, ledger.Kubelet, ledger.Active, f.inv.GPUs[0].UUID))
	must(f.l.Acquire(stopped, ledger.Kubelet, ledger.Active, f.inv.GPUs[0].UUID))
	must(f.l.Acquire(stopped, ledger.Attach, ledger.Active, f.inv.GPUs[1].UUID))
	must(f.l.Acquire(ledger.Holder{Token: "tok2"}, ledger.Kubelet, ledger.Active, f.inv.GPUs[2].UUID))
	must(f.l.Acquire(gone, ledger.Kubelet, ledger.Active, f.inv.GPUs[2].UUID))

	if _, err := f.p.Synchronize(ctx, []*api.PodSandbox{crash}, nil); err != nil {
		t.Fatal(err)
	}
	g, ok := f.l.Lookup(f.inv.GPUs[0].UUID)
	if !ok || g.Reason != ledger.Kubelet || g.Holder.PodUID != "uid-crash" || g.Holder.ContainerID != "" {
		t.Fatalf("GPU 0 = %+v (held %v), want kept for pod crash, no container", g, ok)
	}
	for _, i := range []int{1, 2} {
		if g, held := f.l.Lookup(f.inv.GPUs[i].UUID); held {
			t.Errorf("GPU %d still held by %+v", i, g)
		}
	}
	if err := f.l.Acquire(ledger.Holder{ContainerID: "x", PodUID: "uid-other"}, ledger.Attach, ledger.Active, f.inv.GPUs[0].UUID); err == nil {
		t.Fatal("live attach took the GPU kubelet still counts as pod crash's")
	}
	// kubelet restarts the container with the same Allocate answer.
	restarted := &api.Container{Id: "c2", Name: "main", PodSandboxId: "sb-crash", Linux: &api.LinuxContainer{},
		Annotations: map[string]string{policy.AllocationAnnotation: "tok"},
		CDIDevices:  []*api.CDIDevice{{Name: "nvidia.com/gpu=" + f.inv.GPUs[0].UUID}}}
	if _, _, err := f.p.CreateContainer(ctx, crash, restarted); err != nil {
		t.Fatalf("restarted container refused: %v", err)
	}
	if g, _ := f.l.Lookup(f.inv.GPUs[0].UUID); g.Holder.ContainerID != "c2" {
		t.Fatalf("GPU 0 held by %+v, want the restarted container", g.Holder)
	}
}

// A stopped container is no longer a running holder: kubelet's next
// allocation may take its GPU over (deviceplugin.WithRunning).
func TestStopContainerForgetsTheContainer(t *testing.T) {
	f := newFixture(t, 2)
	ctx := context.Background()
	p := pod("ml", "p", nil)
	c := ctr("c1", "main")
	if _, _, err := f.p.CreateContainer(ctx, p, c); err != nil {
		t.Fatal(err)
	}
	if !f.p.registry.Has("c1") {
		t.Fatal("created container not registered")
	}
	if _, err := f.p.StopContainer(ctx, p, c); err != nil {
		t.Fatal(err)
	}
	if f.p.registry.Has("c1") {
		t.Fatal("stopped container still registered as running")
	}
}
