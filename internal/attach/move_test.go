package attach

import (
	"errors"
	"testing"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// holderGrant records GPU 3 as kubelet's allocation claimed by a holder
// pod's pause container, as the NRI plugin does.
func holderGrant(t *testing.T, l *ledger.Ledger) ledger.Grant {
	t.Helper()
	h := ledger.Holder{ContainerID: "pause0", Container: "holder", PodNamespace: "ml", PodName: "gpuatt-holder-a", PodUID: "holder-uid"}
	uuid := testInventory().GPUs[3].UUID
	must(t, l.Acquire(h, ledger.Kubelet, ledger.Active, uuid))
	g, _ := l.Lookup(uuid)
	return g
}

func TestMoveRealisesTheHoldersAllocation(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	before := holderGrant(t, l)
	// a plain attach of the holder's GPU is refused: it is kubelet's
	if _, err := m.Attach(Target{PodNamespace: "ml", PodName: "p"}, []string{"3"}, 0); err == nil {
		t.Fatal("attach took a GPU kubelet allocated to another pod")
	}
	// a move from another pod is refused too
	if _, err := m.Move(Target{PodNamespace: "ml", PodName: "p"}, "other-uid", []string{before.GPU}); err == nil {
		t.Fatal("a move from a pod kubelet did not allocate the GPU to succeeded")
	}
	res, err := m.Move(Target{PodNamespace: "ml", PodName: "p"}, "holder-uid", []string{before.GPU})
	must(t, err)
	if len(res.GPUs) != 1 || res.GPUs[0].Index != 3 {
		t.Fatalf("moved %+v", res.GPUs)
	}
	if got := s.open("/dev/nvidia3"); got != "ENXIO" {
		t.Fatalf("after the move, open /dev/nvidia3 = %s, want ENXIO (allowed, no driver)", got)
	}
	g, _ := l.Lookup(before.GPU)
	if g.Reason != ledger.Attach || g.State != ledger.Active || g.Holder.PodName != "p" || g.Holder.Realises != "holder-uid" {
		t.Fatalf("grant after the move %+v, want an attach to p realising the holder's allocation", g)
	}
	if len(l.Grants()) != 1 {
		t.Fatalf("the GPU is counted %d times: %v", len(l.Grants()), l.Grants())
	}
}

func TestFailedMoveGivesTheAllocationBack(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	before := holderGrant(t, l)
	list := s.devicesList()
	m.SetFailpoint(func(at string) error {
		if at == "granted" {
			return errors.New("injected")
		}
		return nil
	})
	if _, err := m.Move(Target{PodNamespace: "ml", PodName: "p"}, "holder-uid", []string{before.GPU}); err == nil {
		t.Fatal("move succeeded through a failpoint")
	}
	g, _ := l.Lookup(before.GPU)
	g.Since = before.Since
	if g != before || len(l.Grants()) != 1 {
		t.Fatalf("ledger after a failed move %v, want only the holder's grant %+v", l.Grants(), before)
	}
	if after := s.devicesList(); after != list {
		t.Fatalf("devices.list changed: %q -> %q", list, after)
	}
}

// A crash in the middle of a move (hotgpud killed -9 after the holder's
// grant became the target's pending one) is undone at the restart by giving
// the GPU back to the holder pod, as kubelet still counts it: the
// attachment's next try moves it again.
func TestCrashedMoveGivesTheAllocationBack(t *testing.T) {
	for _, step := range []string{"reserved", "granted"} {
		t.Run(step, func(t *testing.T) {
			s := newSandbox(t)
			state := t.TempDir()
			m, _ := newManager(t, s, state)
			before := holderGrant(t, m.ledger)
			list := s.devicesList()
			m.SetFailpoint(func(at string) error {
				if at == step {
					panic("crash") // skips every rollback, as a kill -9 does
				}
				return nil
			})
			func() {
				defer func() { _ = recover() }()
				_, _ = m.Move(Target{PodNamespace: "ml", PodName: "p"}, "holder-uid", []string{before.GPU})
				t.Fatal("the move did not reach the failpoint")
			}()
			restarted, l := newManager(t, s, state)
			if _, err := restarted.Recover(); err != nil {
				t.Fatal(err)
			}
			g, ok := l.Lookup(before.GPU)
			if !ok || g.Reason != ledger.Kubelet || g.State != ledger.Active || g.Holder.PodUID != "holder-uid" || len(l.Grants()) != 1 {
				t.Fatalf("ledger after a crashed move and recovery %v, want the holder pod's kubelet grant back", l.Grants())
			}
			if after := s.devicesList(); after != list {
				t.Fatalf("devices.list changed: %q -> %q", list, after)
			}
			if _, err := restarted.Move(Target{PodNamespace: "ml", PodName: "p"}, "holder-uid", []string{before.GPU}); err != nil {
				t.Fatalf("the move after recovery: %v", err)
			}
		})
	}
}
