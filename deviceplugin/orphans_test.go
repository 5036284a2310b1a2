package deviceplugin

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// fakePodResources is kubelet's PodResources endpoint listing one pod that
// holds the given devices.
type fakePodResources struct {
	podresources.UnimplementedPodResourcesListerServer
	resource string
	devices  []string
	// during, when set, runs while kubelet "answers" (a racing Allocate).
	during func()
}

func (f *fakePodResources) List(context.Context, *podresources.ListPodResourcesRequest) (*podresources.ListPodResourcesResponse, error) {
	if f.during != nil {
		f.during()
	}
	return &podresources.ListPodResourcesResponse{PodResources: []*podresources.PodResources{{
		Name: "running", Namespace: "default",
		Containers: []*podresources.ContainerResources{{
			Name:    "main",
			Devices: []*podresources.ContainerDevices{{ResourceName: f.resource, DeviceIds: f.devices}},
		}},
	}}}, nil
}

func servePodResources(t *testing.T, f *fakePodResources) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresources.RegisterPodResourcesListerServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

// seed records grants as they would look after they were made at since.
func seed(t *testing.T, dir string, since time.Time, grants ...ledger.Grant) *ledger.Ledger {
	t.Helper()
	store, err := ledger.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range grants {
		grants[i].Since, grants[i].State = since, ledger.Active
	}
	if err := store.Save(grants); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(store)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSweepOrphans(t *testing.T) {
	f := newFixture(t, "dgxa100")
	old := time.Now().Add(-10 * time.Minute)
	l := seed(t, t.TempDir(), old,
		ledger.Grant{GPU: f.uuid(0), Reason: ledger.Kubelet},                                     // kubelet still assigns it: pod not started yet
		ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet},                                     // orphan: its pod is gone
		ledger.Grant{GPU: f.uuid(2), Reason: ledger.Kubelet, Holder: attached},                   // claimed by a container: NRI's business
		ledger.Grant{GPU: f.uuid(3), Reason: ledger.Kubelet, Holder: ledger.Holder{PodUID: "u"}}, // kept for a restarting container
		ledger.Grant{GPU: f.uuid(4), Reason: ledger.Attach, Holder: ledger.Holder{ContainerID: "x"}},
	)
	f.p.ledger = l
	sock := servePodResources(t, &fakePodResources{resource: f.p.ResourceName(), devices: []string{f.uuid(0)}})

	released, err := f.p.SweepOrphans(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(released, []string{f.uuid(1)}) {
		t.Fatalf("released %v, want only GPU 1 (%s)", released, f.uuid(1))
	}
	if _, held := l.Lookup(f.uuid(1)); held {
		t.Fatal("orphan still held")
	}
	if len(l.Grants()) != 4 {
		t.Fatalf("sweep touched other grants: %v", l.Grants())
	}
}

func TestSweepOrphansGraceAndNoKubelet(t *testing.T) {
	f := newFixture(t, "dgxa100")
	fresh := seed(t, t.TempDir(), time.Now(), ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet})
	f.p.ledger = fresh
	sock := servePodResources(t, &fakePodResources{resource: f.p.ResourceName()})
	if released, err := f.p.SweepOrphans(context.Background(), sock); err != nil || len(released) != 0 {
		t.Fatalf("a just-made allocation was released: %v, %v", released, err)
	}
	f.p.ledger = seed(t, t.TempDir(), time.Now().Add(-time.Hour), ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet})
	if released, err := f.p.SweepOrphans(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil || len(released) != 0 {
		t.Fatalf("without kubelet: released %v, err %v; want an error and nothing released", released, err)
	}
	if len(f.p.ledger.Grants()) != 1 {
		t.Fatal("grant lost without kubelet's answer")
	}
}

// Kubelet allocating an orphan's GPU again while the sweep asks about it:
// the new allocation must survive (the sweep re-checks under the lock).
func TestSweepOrphansSparesAReallocation(t *testing.T) {
	f := newFixture(t, "dgxa100")
	f.p.ledger = seed(t, t.TempDir(), time.Now().Add(-time.Hour), ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet})
	var token string
	sock := servePodResources(t, &fakePodResources{resource: f.p.ResourceName(), during: func() {
		resp, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
			ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{f.uuid(1)}}},
		})
		if err != nil {
			t.Error(err)
			return
		}
		token = resp.ContainerResponses[0].Annotations[policy.AllocationAnnotation]
	}})
	released, err := f.p.SweepOrphans(context.Background(), sock)
	if err != nil || len(released) != 0 {
		t.Fatalf("released %v, %v: the fresh allocation went with the orphan", released, err)
	}
	if g, ok := f.p.ledger.Lookup(f.uuid(1)); !ok || g.Holder.Token != token {
		t.Fatalf("GPU 1 = %+v, want kubelet's new allocation", g)
	}
}
