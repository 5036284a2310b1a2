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

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

func allocate(t *testing.T, f *fixture, uuid string) (token string, err error) {
	t.Helper()
	resp, err := f.p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{uuid}}},
	})
	if err != nil {
		return "", err
	}
	return resp.ContainerResponses[0].Annotations[policy.AllocationAnnotation], nil
}

// kubelet gives the init container's GPU to the app container and calls
// Allocate again before either starts: both containers must claim it.
func TestInitAndAppContainerBothClaim(t *testing.T) {
	f := newFixture(t, "dgxa100")
	initToken, err := allocate(t, f, f.uuid(0))
	if err != nil {
		t.Fatal(err)
	}
	appToken, err := allocate(t, f, f.uuid(0))
	if err != nil {
		t.Fatal(err)
	}
	pod := ledger.Holder{PodNamespace: "ml", PodName: "p", PodUID: "uid-p"}
	initCtr, app := pod, pod
	initCtr.ContainerID, initCtr.Token = "init", initToken
	app.ContainerID, app.Token = "app", appToken
	if err := f.ledger.Acquire(initCtr, ledger.Kubelet, ledger.Active, f.uuid(0)); err != nil {
		t.Fatalf("init container refused: %v", err)
	}
	if _, _, err := f.ledger.ContainerGone("init"); err != nil {
		t.Fatal(err)
	}
	if err := f.ledger.Acquire(app, ledger.Kubelet, ledger.Active, f.uuid(0)); err != nil {
		t.Fatalf("app container refused: %v", err)
	}
}

// kubelet allocates a GPU whose holder has stopped (its pod is going away):
// kubelet is the authority, the new allocation takes over; a running holder
// is never dispossessed.
func TestAllocateTakesOverOnlyFromAStoppedHolder(t *testing.T) {
	running := map[string]bool{"old": true}
	f := newFixture(t, "dgxa100", WithRunning(func(id string) bool { return running[id] }))
	token, err := allocate(t, f, f.uuid(0))
	if err != nil {
		t.Fatal(err)
	}
	old := ledger.Holder{ContainerID: "old", PodNamespace: "ml", PodName: "old", PodUID: "uid-old", Token: token}
	if err := f.ledger.Acquire(old, ledger.Kubelet, ledger.Active, f.uuid(0)); err != nil {
		t.Fatal(err)
	}
	before := f.ledger.Grants()
	if _, err := allocate(t, f, f.uuid(0)); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "held by container old") {
		t.Fatalf("allocation of a running holder's GPU: err = %v, want FailedPrecondition naming it", err)
	}
	if got := f.ledger.Grants(); len(got) != 1 || got[0] != before[0] {
		t.Fatalf("refused allocation changed the ledger: %+v", got)
	}

	running["old"] = false
	newToken, err := allocate(t, f, f.uuid(0))
	if err != nil {
		t.Fatalf("kubelet's allocation was refused although the holder stopped: %v", err)
	}
	g, _ := f.ledger.Lookup(f.uuid(0))
	if g.Holder.ContainerID != "" || g.Holder.PodUID != "" || !g.Holder.Accepts(newToken) || g.Holder.Accepts(token) {
		t.Fatalf("GPU 0 = %+v, want an unclaimed allocation for the new token only", g.Holder)
	}
	// Attach GPUs are never kubelet's to take.
	if err := f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.uuid(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := allocate(t, f, f.uuid(1)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("allocation of a live-attached GPU: %v", err)
	}
}

// A pod kubelet no longer lists loses its GPUs within seconds once none of
// its containers runs (not when its sandbox is removed, up to a minute
// later); a listed pod, or one whose container still runs, keeps them.
func TestSweepReleasesPodsKubeletNoLongerLists(t *testing.T) {
	running := map[string]bool{"busy": true}
	f := newFixture(t, "dgxa100", WithRunning(func(id string) bool { return running[id] }))
	holder := func(id, pod string) ledger.Holder {
		return ledger.Holder{ContainerID: id, PodNamespace: "default", PodName: pod, PodUID: "uid-" + pod}
	}
	f.p.ledger = seed(t, t.TempDir(), time.Now(),
		ledger.Grant{GPU: f.uuid(0), Reason: ledger.Kubelet, Holder: holder("", "deleted")},     // its container stopped: StopContainer unbound it
		ledger.Grant{GPU: f.uuid(1), Reason: ledger.Kubelet, Holder: holder("exited", "done")},  // its container stopped unseen
		ledger.Grant{GPU: f.uuid(2), Reason: ledger.Kubelet, Holder: holder("busy", "dying")},   // still terminating
		ledger.Grant{GPU: f.uuid(3), Reason: ledger.Kubelet, Holder: holder("", "running")},     // CrashLoopBackOff of a listed pod
		ledger.Grant{GPU: f.uuid(4), Reason: ledger.Annotation, Holder: holder("a", "deleted")}, // not kubelet's
	)
	sock := servePodResources(t, &fakePodResources{resource: f.p.ResourceName(), devices: []string{f.uuid(3)}})
	ctx := context.Background()

	if released, err := f.p.SweepOrphans(ctx, sock); err != nil || len(released) != 0 {
		t.Fatalf("unregistered: released %v, %v; kubelet that does not talk to us is not asked about pods", released, err)
	}
	f.p.registered.Store(true)
	if released, err := f.p.SweepOrphans(ctx, sock); err != nil || len(released) != 0 {
		t.Fatalf("first miss: released %v, %v; want nothing before %s", released, err, podGoneGrace)
	}
	for uid := range f.p.podsAbsent {
		f.p.podsAbsent[uid] = time.Now().Add(-podGoneGrace)
	}
	released, err := f.p.SweepOrphans(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{f.uuid(0), f.uuid(1)}; !sameSet(released, want) {
		t.Fatalf("released %v, want GPUs 0 and 1 %v", released, want)
	}
	if n := len(f.p.ledger.Grants()); n != 3 {
		t.Fatalf("%d grants left, want 3: %+v", n, f.p.ledger.Grants())
	}
	// The terminating pod's absence was timed while its container ran: it
	// goes as soon as the container stops.
	running["busy"] = false
	if released, err := f.p.SweepOrphans(ctx, sock); err != nil || !slices.Equal(released, []string{f.uuid(2)}) {
		t.Fatalf("after its container stopped: released %v, %v; want GPU 2", released, err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}
