package ledger

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// kubelet re-uses an init container's devices for the app container and
// calls Allocate again: the init container still presents the first
// token, the app container the second. Both must claim, in turn.
func TestEveryTokenOfAnAllocationStaysValid(t *testing.T) {
	l, s := newLedger(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	initCtr := Holder{ContainerID: "init-1", Container: "init", PodNamespace: "ml", PodName: "a", PodUID: "uid-a", Token: "t-init"}
	app := Holder{ContainerID: "app-1", Container: "main", PodNamespace: "ml", PodName: "a", PodUID: "uid-a", Token: "t-app"}
	must(l.Acquire(Holder{Token: "t-init"}, Kubelet, Active, "GPU-0")) // Allocate for the init container
	must(l.Acquire(Holder{Token: "t-app"}, Kubelet, Active, "GPU-0"))  // Allocate again for the app container
	must(l.Acquire(initCtr, Kubelet, Active, "GPU-0"))
	if _, _, err := l.ContainerGone(initCtr.ContainerID); err != nil {
		t.Fatal(err)
	}
	must(l.Acquire(app, Kubelet, Active, "GPU-0"))
	if _, _, err := l.ContainerGone(app.ContainerID); err != nil {
		t.Fatal(err)
	}
	// The sandbox is re-created: the init container runs again, then the app.
	initCtr.ContainerID = "init-2"
	must(l.Acquire(initCtr, Kubelet, Active, "GPU-0"))
	if _, _, err := l.ContainerGone(initCtr.ContainerID); err != nil {
		t.Fatal(err)
	}
	thief := Holder{ContainerID: "x", PodUID: "uid-a", Token: "t-guess"}
	if err := l.Acquire(thief, Kubelet, Active, "GPU-0"); !errors.Is(err, ErrHeld) {
		t.Fatalf("a container of the pod without a token of the allocation claimed it: %v", err)
	}
	// Persisted with the ledger: a restart keeps them.
	reopened, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	app.ContainerID = "app-2"
	if err := reopened.Acquire(app, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatalf("the app container's token was lost: %v", err)
	}
}

// Once a container of a pod has had the GPU and the pod's containers have
// stopped, kubelet allocating it again gives it to a new pod: the old
// pod's tokens end with its allocation.
func TestNewPodTakesOverAStoppedPodsAllocation(t *testing.T) {
	l, _ := newLedger(t)
	old := Holder{ContainerID: "old-1", PodUID: "uid-old", Token: "t-old"}
	if err := l.Acquire(Holder{Token: "t-old"}, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(old, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.ContainerGone(old.ContainerID); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(Holder{Token: "t-new"}, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatalf("kubelet's new allocation was refused: %v", err)
	}
	old.ContainerID = "old-2"
	if err := l.Acquire(old, Kubelet, Active, "GPU-0"); !errors.Is(err, ErrHeld) {
		t.Fatalf("the old pod claimed a GPU kubelet gave to another pod: %v", err)
	}
	if err := l.Acquire(Holder{ContainerID: "new-1", PodUID: "uid-new", Token: "t-new"}, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatalf("the new pod could not claim its allocation: %v", err)
	}
}

func TestTokensAreBounded(t *testing.T) {
	l, _ := newLedger(t)
	for i := range 2 * maxTokens {
		if err := l.Acquire(Holder{Token: fmt.Sprintf("t%d", i)}, Kubelet, Active, "GPU-0"); err != nil {
			t.Fatal(err)
		}
	}
	g, _ := l.Lookup("GPU-0")
	if n := len(strings.Fields(g.Holder.Tokens)); n != maxTokens {
		t.Fatalf("grant keeps %d other tokens, want %d", n, maxTokens)
	}
	newest := Holder{ContainerID: "c", PodUID: "u", Token: fmt.Sprintf("t%d", 2*maxTokens-2)}
	if err := l.Acquire(newest, Kubelet, Active, "GPU-0"); err != nil {
		t.Fatalf("a recent token was dropped: %v", err)
	}
}
