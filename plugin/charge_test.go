package plugin

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// fakeCharger records charges and answers err; it reports a charge as new
// unless the container was charged before.
type fakeCharger struct {
	err       error
	charged   map[string]int
	uncharged []string
	// during runs inside Charge (another path taking GPUs meanwhile)
	during func()
}

func (f *fakeCharger) Charge(_ context.Context, ns, name, uid, container string, n int) (bool, error) {
	if f.err != nil {
		return false, f.err
	}
	if f.during != nil {
		f.during()
	}
	key := ns + "/" + name + "/" + uid + "/" + container
	_, before := f.charged[key]
	f.charged[key] = n
	return !before, nil
}

func (f *fakeCharger) Uncharge(_ context.Context, ns, name, uid, container string) error {
	key := ns + "/" + name + "/" + uid + "/" + container
	delete(f.charged, key)
	f.uncharged = append(f.uncharged, key)
	return nil
}

func TestAnnotationGPUsAreChargedFirst(t *testing.T) {
	ann := map[string]string{policy.AnnotationKey("train"): "2"}
	t.Run("charged", func(t *testing.T) {
		f := newFixture(t, 4)
		ch := &fakeCharger{charged: map[string]int{}}
		f.p.SetCharger(ch)
		if _, _, err := f.p.CreateContainer(context.Background(), pod("ml", "nb", ann), ctr("c1", "train")); err != nil {
			t.Fatal(err)
		}
		if got := ch.charged["ml/nb/uid-nb/train"]; got != 2 || len(f.l.Grants()) != 2 {
			t.Fatalf("charged %v, grants %v; want 2 GPUs charged and granted", ch.charged, f.l.Grants())
		}
		// a restarted container: charged already, granted again
		if err := f.p.RemoveContainer(context.Background(), pod("ml", "nb", ann), ctr("c1", "train")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.p.CreateContainer(context.Background(), pod("ml", "nb", ann), ctr("c2", "train")); err != nil {
			t.Fatal(err)
		}
		if len(f.l.Grants()) != 2 || len(ch.uncharged) != 0 {
			t.Fatalf("after a restart: grants %v, uncharged %v", f.l.Grants(), ch.uncharged)
		}
	})
	for name, refusal := range map[string]error{
		"over quota":      errors.New(`pods "nb-train-gpucharge-uid-nb" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=2`),
		"API unreachable": errors.New("cannot charge 2 GPU(s) to namespace ml's quota: connection refused"),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 4)
			f.p.SetCharger(&fakeCharger{err: refusal, charged: map[string]int{}})
			adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "nb", ann), ctr("c1", "train"))
			if err == nil || !strings.Contains(err.Error(), refusal.Error()) || adj != nil {
				t.Fatalf("err %v, adjustment %v; want the refusal and nothing given", err, adj)
			}
			if g := f.l.Grants(); len(g) != 0 {
				t.Fatalf("a refused container left grants %v", g)
			}
		})
	}
	t.Run("GPUs taken during the charge", func(t *testing.T) {
		f := newFixture(t, 4)
		want := map[string]string{policy.AnnotationKey("train"): f.inv.GPUs[1].UUID}
		ch := &fakeCharger{charged: map[string]int{}, during: func() {
			if err := f.l.Acquire(ledger.Holder{ContainerID: "other"}, ledger.Attach, ledger.Active, f.inv.GPUs[1].UUID); err != nil {
				t.Error(err)
			}
		}}
		f.p.SetCharger(ch)
		if _, _, err := f.p.CreateContainer(context.Background(), pod("ml", "nb", want), ctr("c1", "train")); err == nil {
			t.Fatal("a held GPU was given")
		}
		if len(ch.charged) != 0 || len(ch.uncharged) != 1 {
			t.Fatalf("charges %v left (uncharged %v) for a container that got nothing", ch.charged, ch.uncharged)
		}
	})
	t.Run("kubelet GPUs are not charged", func(t *testing.T) {
		f := newFixture(t, 4)
		ch := &fakeCharger{charged: map[string]int{}}
		f.p.SetCharger(ch)
		c := ctr("c1", "train")
		c.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=1"}}
		if _, _, err := f.p.CreateContainer(context.Background(), pod("ml", "nb", nil), c); err != nil {
			t.Fatal(err)
		}
		if g, _ := f.l.Lookup(f.inv.GPUs[1].UUID); g.Reason != ledger.Kubelet || len(ch.charged) != 0 {
			t.Fatalf("grant %+v, charged %v; want kubelet's GPU recorded and nothing charged", g, ch.charged)
		}
	})
}
