package ledger

import (
	"errors"
	"strings"
	"testing"
)

// A quarantined GPU survives the container and its pod going away and a
// restart, refuses every holder with a message saying why, and is free
// again only after Lift.
func TestQuarantine(t *testing.T) {
	l, s := newLedger(t)
	if err := l.Acquire(podA, Attach, Pending, "GPU-1", "GPU-2"); err != nil {
		t.Fatal(err)
	}
	if err := l.Quarantine(podB.ContainerID, "x", "GPU-1"); err == nil {
		t.Fatal("quarantined a GPU another container holds")
	}
	if err := l.Quarantine(podA.ContainerID, "detached while pid 42 held it", "GPU-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Release(podA.ContainerID, "GPU-2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.ContainerGone(podA.ContainerID); err != nil {
		t.Fatal(err)
	}
	if _, err := l.PodGone(podA.PodUID); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reconcile(func(string) bool { return false }, func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	reloaded, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []Holder{podA, podB, {PodUID: "uid-c"}} {
		for _, r := range []Reason{Attach, Kubelet} {
			err := reloaded.Acquire(h, r, Active, "GPU-1")
			if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "quarantined: detached while pid 42 held it") {
				t.Fatalf("Acquire by %v (%s) = %v; want refused as quarantined", h, r, err)
			}
		}
	}
	if by := reloaded.HeldBy("GPU-1"); !strings.Contains(by, "quarantine") {
		t.Errorf("HeldBy = %q", by)
	}
	if ok, err := reloaded.Lift("GPU-2"); ok || err != nil {
		t.Errorf("Lift of a free GPU = %v, %v", ok, err)
	}
	if ok, err := reloaded.Lift("GPU-1"); !ok || err != nil {
		t.Fatalf("Lift = %v, %v", ok, err)
	}
	if err := reloaded.Acquire(podB, Attach, Active, "GPU-1"); err != nil {
		t.Fatalf("Acquire after Lift: %v", err)
	}
	if ok, _ := reloaded.Lift("GPU-1"); ok {
		t.Error("Lift freed a GPU held by a container")
	}
}
