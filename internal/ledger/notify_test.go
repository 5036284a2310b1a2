package ledger

import (
	"errors"
	"testing"
)

func TestSubscribeNotifiesOnEveryCommittedChange(t *testing.T) {
	tests := []struct {
		name   string
		change func(l *Ledger) error
		want   bool
	}{
		{"acquire", func(l *Ledger) error { return l.Acquire(podB, Attach, Active, "GPU-1") }, true},
		{"release", func(l *Ledger) error { _, err := l.Release(podA.ContainerID); return err }, true},
		{"container gone", func(l *Ledger) error { _, _, err := l.ContainerGone(podA.ContainerID); return err }, true},
		{"refused acquire", func(l *Ledger) error {
			if err := l.Acquire(podB, Attach, Active, "GPU-0"); !errors.Is(err, ErrHeld) {
				return err
			}
			return nil
		}, false},
		{"release of nothing", func(l *Ledger) error { _, err := l.Release("nobody"); return err }, false},
		{"acquire of what it holds", func(l *Ledger) error { return l.Acquire(podA, Annotation, Active, "GPU-0") }, false},
		{"set state it has", func(l *Ledger) error { return l.SetState(podA.ContainerID, Active, "GPU-0") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLedger(t)
			if err := l.Acquire(podA, Annotation, Active, "GPU-0"); err != nil {
				t.Fatal(err)
			}
			ch, cancel := l.Subscribe()
			defer cancel()
			if err := tt.change(l); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ch:
				if !tt.want {
					t.Fatal("notified although nothing was committed")
				}
			default:
				if tt.want {
					t.Fatal("not notified of a committed change")
				}
			}
		})
	}
}

func TestSubscribeCoalescesAndNeverBlocksWriters(t *testing.T) {
	l, _ := newLedger(t)
	ch, cancel := l.Subscribe()
	for _, u := range []string{"GPU-0", "GPU-1", "GPU-2"} { // nobody reads in between
		if err := l.Acquire(podA, Attach, Active, u); err != nil {
			t.Fatal(err)
		}
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("three changes queued three wake-ups; want one")
	default:
	}
	cancel()
	if _, err := l.ReleaseWhere(func(g Grant) bool { return g.GPU == "GPU-0" }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("notified after the subscription ended")
	default:
	}
}
