package ledger

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func newLedger(t *testing.T) (*Ledger, *FileStore) {
	t.Helper()
	s, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	return l, s
}

var (
	podA = Holder{ContainerID: "aaaaaaaaaaaaaaaa", Container: "train", PodNamespace: "ml", PodName: "a", PodUID: "uid-a"}
	podB = Holder{ContainerID: "bbbbbbbbbbbbbbbb", Container: "infer", PodNamespace: "ml", PodName: "b", PodUID: "uid-b"}
)

func TestAcquireIsAllOrNothing(t *testing.T) {
	l, s := newLedger(t)
	if err := l.Acquire(podA, Annotation, Active, "GPU-1"); err != nil {
		t.Fatal(err)
	}
	err := l.Acquire(podB, Attach, Active, "GPU-0", "GPU-1")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.GPU != "GPU-1" {
		t.Fatalf("err = %v, want HeldError for GPU-1", err)
	}
	if !strings.Contains(err.Error(), "ml/a/train") {
		t.Errorf("error %q does not say who holds the GPU", err)
	}
	if _, ok := l.Lookup("GPU-0"); ok {
		t.Fatal("GPU-0 was taken although the request failed")
	}
	reopened, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := reopened.Grants(); len(got) != 1 || got[0].Holder.ContainerID != podA.ContainerID {
		t.Fatalf("persisted grants = %+v", got)
	}
}

func TestAcquireIdempotentAndKubeletClaim(t *testing.T) {
	l, _ := newLedger(t)
	if err := l.Acquire(podA, Attach, Active, "GPU-2"); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(podA, Attach, Active, "GPU-2"); err != nil {
		t.Fatalf("re-acquire by the same container: %v", err)
	}
	alloc := Holder{PodUID: ""}
	if err := l.Acquire(alloc, Kubelet, Active, "GPU-3"); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(podB, Annotation, Active, "GPU-3"); !errors.Is(err, ErrHeld) {
		t.Fatalf("annotation took a kubelet allocation: %v", err)
	}
	if err := l.Acquire(podB, Kubelet, Active, "GPU-3"); err != nil {
		t.Fatalf("container could not claim its kubelet allocation: %v", err)
	}
	if err := l.Acquire(podA, Kubelet, Active, "GPU-3"); !errors.Is(err, ErrHeld) {
		t.Fatalf("a second container claimed a claimed allocation: %v", err)
	}
	if g, _ := l.Lookup("GPU-3"); g.Holder.ContainerID != podB.ContainerID {
		t.Fatalf("GPU-3 held by %+v", g.Holder)
	}
}

func TestContainerGoneKeepsKubeletAllocationForPod(t *testing.T) {
	l, _ := newLedger(t)
	must(t, l.Acquire(Holder{}, Kubelet, Active, "GPU-0"))
	must(t, l.Acquire(podA, Kubelet, Active, "GPU-0"))
	must(t, l.Acquire(podA, Attach, Active, "GPU-1"))
	released, unbound, err := l.ContainerGone(podA.ContainerID)
	if err != nil || len(released) != 1 || released[0].GPU != "GPU-1" || len(unbound) != 1 {
		t.Fatalf("released %v unbound %v: %v", released, unbound, err)
	}
	other := podB
	if err := l.Acquire(other, Kubelet, Active, "GPU-0"); !errors.Is(err, ErrHeld) {
		t.Fatalf("a container of another pod claimed pod A's allocation: %v", err)
	}
	restarted := podA
	restarted.ContainerID = "cccccccccccccccc"
	must(t, l.Acquire(restarted, Kubelet, Active, "GPU-0"))
	if _, err := l.PodGone(podA.PodUID); err != nil {
		t.Fatal(err)
	}
	if len(l.Grants()) != 0 {
		t.Fatalf("pod removal left %v", l.Grants())
	}
}

func TestReleaseAndReconcile(t *testing.T) {
	l, _ := newLedger(t)
	must(t, l.Acquire(podA, Annotation, Active, "GPU-0", "GPU-1"))
	must(t, l.Acquire(podB, Attach, Pending, "GPU-2"))
	must(t, l.Acquire(Holder{}, Kubelet, Active, "GPU-3"))
	ctrRun := Holder{ContainerID: "default-job", PID: 4242} // ctr container attached by pid
	must(t, l.Acquire(ctrRun, Attach, Active, "GPU-4"))

	if _, err := l.Release(podB.ContainerID, "GPU-0"); err == nil {
		t.Fatal("released a GPU held by another container")
	}
	freed, err := l.Release(podA.ContainerID, "GPU-1")
	if err != nil || len(freed) != 1 || freed[0].GPU != "GPU-1" {
		t.Fatalf("freed = %v, %v", freed, err)
	}
	gone, err := l.Reconcile(func(id string) bool { return id == podA.ContainerID }, func(string) bool { return false })
	if err != nil || len(gone) != 1 || gone[0].GPU != "GPU-2" {
		t.Fatalf("reconcile released %v, %v", gone, err)
	}
	if _, ok := l.Lookup("GPU-3"); !ok {
		t.Fatal("reconcile dropped an unclaimed kubelet allocation")
	}
	if _, ok := l.Lookup("GPU-4"); !ok {
		t.Fatal("reconcile dropped an external (pid) holder that NRI cannot see")
	}
	freed, err = l.Release(podA.ContainerID)
	if err != nil || len(freed) != 1 {
		t.Fatalf("release all = %v, %v", freed, err)
	}
}

type failingStore struct{ FileStore }

func (failingStore) Save([]Grant) error { return errors.New("disk full") }

func TestFailedSaveChangesNothing(t *testing.T) {
	l, err := New(&failingStore{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(podA, Attach, Active, "GPU-0"); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	if len(l.Grants()) != 0 {
		t.Fatal("in-memory ledger changed although persisting failed")
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	for name, content := range map[string]string{
		"truncated": `{"version":1,"grants":[{"gpu":"GPU-0","holder":{"containerID":"a"},"reason":"attach","state":"act`,
		"garbage":   "\x00\x01 not json",
		"version":   `{"version":7,"grants":[]}`,
		"duplicate": `{"version":1,"grants":[{"gpu":"G","state":"active"},{"gpu":"G","state":"active"}]}`,
		"bad state": `{"version":1,"grants":[{"gpu":"G","state":"sleeping"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := NewFileStore(dir)
			if err := os.WriteFile(s.Path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(s)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			moved, err := s.MoveAside("test")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(moved); err != nil {
				t.Fatal(err)
			}
			if l, err := New(s); err != nil || len(l.Grants()) != 0 {
				t.Fatalf("fresh ledger after move aside: %v", err)
			}
		})
	}
}

func TestWriteFileAtomicLeavesNoTempOnError(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can write to read-only directories; covered by the missing-directory case")
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o500))
	defer os.Chmod(dir, 0o700)
	if err := WriteFileAtomic(filepath.Join(dir, "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into read-only dir succeeded")
	}
}

func TestWriteFileAtomicMissingDir(t *testing.T) {
	dir := t.TempDir()
	err := WriteFileAtomic(filepath.Join(dir, "nope", "x"), []byte("x"), 0o600)
	if err == nil {
		t.Fatal("no error")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("left files behind: %v", entries)
	}
}

// Many goroutines race for 8 GPUs; at no point may a GPU have two holders.
func TestConcurrentAcquireNeverDoubleAssigns(t *testing.T) {
	l, s := newLedger(t)
	gpus := []string{"GPU-0", "GPU-1", "GPU-2", "GPU-3", "GPU-4", "GPU-5", "GPU-6", "GPU-7"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := map[string][]string{}
	for c := 0; c < 40; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			h := Holder{ContainerID: fmt.Sprintf("c%02d", c)}
			for _, g := range gpus {
				if err := l.Acquire(h, Attach, Active, g); err == nil {
					mu.Lock()
					won[g] = append(won[g], h.ContainerID)
					mu.Unlock()
				}
				if c%3 == 0 {
					_, _ = l.Release(h.ContainerID)
				}
			}
		}(c)
	}
	wg.Wait()
	reopened, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range reopened.Grants() {
		if seen[g.GPU] {
			t.Fatalf("GPU %s recorded twice", g.GPU)
		}
		seen[g.GPU] = true
	}
	if len(reopened.Grants()) != len(l.Grants()) {
		t.Fatalf("persisted %d grants, memory has %d", len(reopened.Grants()), len(l.Grants()))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSetNodesRecordsCreatedNodesDurably(t *testing.T) {
	l, s := newLedger(t)
	must(t, l.Acquire(podA, Attach, Pending, "GPU-0", "GPU-1"))
	must(t, l.Acquire(podB, Attach, Active, "GPU-2"))
	ctl := CreatedNode{Path: "/dev/nvidiactl", Ino: 9, Dev: 44, Rdev: 50175}
	nodes := map[string][]CreatedNode{
		"GPU-0": {{Path: "/dev/nvidia0", Ino: 7, Dev: 44, Rdev: 49920}, ctl},
		"GPU-1": {ctl},
	}
	if err := l.SetNodes(podA.ContainerID, map[string][]CreatedNode{"GPU-0": {ctl}, "GPU-2": {ctl}}); err == nil {
		t.Fatal("recorded nodes with another container's grant")
	}
	if g, _ := l.Lookup("GPU-0"); g.Nodes != "" {
		t.Fatalf("a refused SetNodes changed the ledger: %+v", g)
	}
	must(t, l.SetNodes(podA.ContainerID, nodes))
	before := l.Grants()
	reloaded, err := New(s)
	must(t, err)
	for i, g := range reloaded.Grants() {
		if g != before[i] {
			t.Errorf("after reload: %+v, want %+v", g, before[i])
		}
	}
	for u, want := range nodes {
		if g, _ := reloaded.Lookup(u); g.State != Pending || fmt.Sprint(g.Nodes.List()) != fmt.Sprint(want) {
			t.Errorf("%s after reload: %+v, want pending with nodes %v", u, g, want)
		}
	}
}

// A live attach realising a holder pod's kubelet allocation, once released
// (detached, or its container gone), goes back to the holder pod: kubelet
// still counts the GPU as the holder's, and a restarted target gets it
// moved again.
func TestReleasedMoveGoesBackToTheHolder(t *testing.T) {
	for name, release := range map[string]func(l *Ledger) error{
		"detach":         func(l *Ledger) error { _, err := l.Release("target", "GPU-1"); return err },
		"detach all":     func(l *Ledger) error { _, err := l.Release("target"); return err },
		"container gone": func(l *Ledger) error { _, _, err := l.ContainerGone("target"); return err },
	} {
		t.Run(name, func(t *testing.T) {
			l, _ := newLedger(t)
			holder := Holder{ContainerID: "pause", PodUID: "holder-uid", Token: "tok"}
			if err := l.Acquire(holder, Kubelet, Active, "GPU-1"); err != nil {
				t.Fatal(err)
			}
			target := Holder{ContainerID: "target", PodUID: "target-uid", PodName: "p"}
			if err := l.Acquire(target, Attach, Active, "GPU-1"); err == nil {
				t.Fatal("a plain attach took the holder's kubelet allocation")
			}
			target.Realises = "holder-uid"
			if err := l.Acquire(target, Attach, Active, "GPU-1"); err != nil {
				t.Fatal(err)
			}
			if err := release(l); err != nil {
				t.Fatal(err)
			}
			g, ok := l.Lookup("GPU-1")
			if !ok || g.Reason != Kubelet || g.Holder.PodUID != "holder-uid" || g.Holder.ContainerID != "" {
				t.Fatalf("grant after release %+v (held %t), want the holder pod's unclaimed kubelet allocation", g, ok)
			}
			if err := l.Acquire(target, Attach, Active, "GPU-1"); err != nil {
				t.Fatalf("moving it again: %v", err)
			}
		})
	}
}

// countingStore counts the durable writes.
type countingStore struct {
	FileStore
	saves int
}

func (s *countingStore) Save(g []Grant) error {
	s.saves++
	return s.FileStore.Save(g)
}

// Reserve claims the GPUs Pending and records the nodes made for them in
// one durable write; a refused Reserve writes and changes nothing.
func TestReserveRecordsNodesInOneWrite(t *testing.T) {
	fs, err := NewFileStore(t.TempDir())
	must(t, err)
	s := &countingStore{FileStore: *fs}
	l, err := New(s)
	must(t, err)
	must(t, l.Acquire(podB, Attach, Active, "GPU-2"))
	ctl := CreatedNode{Path: "/dev/nvidiactl", Ino: 9, Dev: 44, Rdev: 50175}
	nodes := map[string][]CreatedNode{"GPU-0": {{Path: "/dev/nvidia0", Ino: 7, Dev: 44, Rdev: 49920}, ctl}}

	s.saves = 0
	if err := l.Reserve(podA, Attach, []string{"GPU-1"}, nodes); err == nil {
		t.Error("recorded nodes with a GPU it did not reserve")
	}
	var held *HeldError
	if err := l.Reserve(podA, Attach, []string{"GPU-0", "GPU-2"}, nodes); !errors.As(err, &held) {
		t.Errorf("reserved a GPU another container holds: %v", err)
	}
	if s.saves != 0 || len(l.Container(podA.ContainerID)) != 0 {
		t.Fatalf("refused reservations wrote %d times, ledger %v", s.saves, l.Grants())
	}

	must(t, l.Reserve(podA, Attach, []string{"GPU-0", "GPU-1"}, nodes))
	if s.saves != 1 {
		t.Errorf("Reserve wrote %d times, want 1", s.saves)
	}
	reloaded, err := New(fs)
	must(t, err)
	for _, u := range []string{"GPU-0", "GPU-1"} {
		g, _ := reloaded.Lookup(u)
		if g.Holder.ContainerID != podA.ContainerID || g.State != Pending || fmt.Sprint(g.Nodes.List()) != fmt.Sprint(nodes[u]) {
			t.Errorf("%s after reload: %+v, want pending for %s with nodes %v", u, g, podA.ContainerID, nodes[u])
		}
	}
}
