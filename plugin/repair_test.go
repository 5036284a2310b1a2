package plugin

import (
	"context"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// TestSynchronizeReleasesUninjectedGrants: hotgpud recorded GPUs in
// CreateContainer and died before answering; containerd created the
// container without them. The next Synchronize frees those annotation
// grants, and leaves alone grants the container really has (its spec has
// the node) and live-attached ones (never in the spec).
func TestSynchronizeReleasesUninjectedGrants(t *testing.T) {
	f := newFixture(t, 4)
	sb := pod("ml", "p", map[string]string{"gpus.hotgpu.dev/container.app": "1"})
	h := func(id string) ledger.Holder { return ledger.Holder{ContainerID: id, PodUID: sb.Uid} }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.l.Acquire(h("lost"), ledger.Annotation, ledger.Active, f.inv.GPUs[0].UUID))
	must(f.l.Acquire(h("kept"), ledger.Annotation, ledger.Active, f.inv.GPUs[1].UUID))
	must(f.l.Acquire(h("attached"), ledger.Attach, ledger.Active, f.inv.GPUs[2].UUID))
	running := func(id string, devs ...*api.LinuxDevice) *api.Container {
		return &api.Container{Id: id, Name: "app", PodSandboxId: sb.Id, State: api.ContainerState_CONTAINER_RUNNING,
			Linux: &api.LinuxContainer{Devices: devs}}
	}
	n1 := f.inv.GPUs[1].Node()
	_, err := f.p.Synchronize(context.Background(), []*api.PodSandbox{sb}, []*api.Container{
		running("lost"),
		running("kept", &api.LinuxDevice{Path: n1.Path, Type: "c", Major: n1.Major, Minor: n1.Minor}),
		running("attached"),
	})
	must(err)
	if g, ok := f.l.Lookup(f.inv.GPUs[0].UUID); ok {
		t.Errorf("GPU 0 is still recorded for a container created without it: %+v", g)
	}
	for i, id := range map[int]string{1: "kept", 2: "attached"} {
		if g, ok := f.l.Lookup(f.inv.GPUs[i].UUID); !ok || g.Holder.ContainerID != id {
			t.Errorf("GPU %d: %+v, want it kept for %s", i, g, id)
		}
	}
}
