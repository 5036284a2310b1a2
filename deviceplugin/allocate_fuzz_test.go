package deviceplugin

import (
	"context"
	"fmt"
	"strings"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// FuzzAllocate: the device IDs in an Allocate request come over kubelet's
// socket (and from a checkpoint that may predate a hardware change). A
// request is either refused with the ledger unchanged, or every ID is a GPU
// of this node, now recorded as a kubelet allocation, and the answer names
// only those GPUs. A GPU held live by another container is never handed out.
func FuzzAllocate(f *testing.F) {
	fx := newFixture(f, "dgxa100")
	for _, s := range []string{
		fx.uuid(0), fx.uuid(1) + "\n" + fx.uuid(2), fx.uuid(3), "0", "../../dev/nvidia0", "", fx.uuid(4) + "\n" + fx.uuid(4),
		strings.ToLower(fx.uuid(5)), fx.uuid(6) + "|" + fx.uuid(7),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ids string) {
		if _, err := fx.ledger.ReleaseWhere(func(ledger.Grant) bool { return true }); err != nil {
			t.Fatal(err)
		}
		live := ledger.Holder{ContainerID: "live-attached", PodUID: "uid-live"}
		if err := fx.ledger.Acquire(live, ledger.Attach, ledger.Active, fx.uuid(3)); err != nil {
			t.Fatal(err)
		}
		before := fmt.Sprint(fx.ledger.Grants())
		req := &pluginapi.AllocateRequest{}
		for _, c := range strings.Split(ids, "|") {
			req.ContainerRequests = append(req.ContainerRequests, &pluginapi.ContainerAllocateRequest{DevicesIds: strings.Split(c, "\n")})
		}
		resp, err := fx.p.Allocate(context.Background(), req)
		if err != nil {
			if after := fmt.Sprint(fx.ledger.Grants()); after != before {
				t.Fatalf("refused allocation %q changed the ledger:\n%s\n->\n%s", ids, before, after)
			}
			return
		}
		if g, _ := fx.ledger.Lookup(fx.uuid(3)); g.Reason != ledger.Attach {
			t.Fatalf("allocation %q took GPU 3 from its live holder: %+v", ids, g)
		}
		for i, cr := range resp.GetContainerResponses() {
			for _, d := range cr.GetCdiDevices() {
				uuid := strings.TrimPrefix(d.GetName(), "nvidia.com/gpu=")
				g, ok := fx.ledger.Lookup(uuid)
				if !ok || g.Reason != ledger.Kubelet {
					t.Fatalf("container %d was told %s, which the ledger does not record as kubelet's: %+v", i, d.GetName(), g)
				}
			}
			for k, v := range cr.GetEnvs() {
				if strings.ContainsAny(v, "/\n") {
					t.Fatalf("env %s=%q carries a path or a newline", k, v)
				}
			}
			if len(cr.GetMounts()) > 0 || len(cr.GetDevices()) > 0 {
				t.Fatalf("answer mounts host paths or devices: %+v", cr)
			}
		}
	})
}
