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
	saves, intents int
}

func (s *countingStore) Save(g []Grant) error {
	s.saves++
	return s.FileStore.Save(g)
}

func (s *countingStore) SaveIntent(g []Grant) error {
	s.intents++
	return s.FileStore.SaveIntent(g)
}

// Reserve claims the GPUs Pending and records the nodes made for them in
// one write, an intent (no fsync: see IntentStore) that a restarted ledger
// finds; a refused Reserve writes and changes nothing.
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
	if s.saves+s.intents != 0 || len(l.Container(podA.ContainerID)) != 0 {
		t.Fatalf("refused reservations wrote %d times, ledger %v", s.saves+s.intents, l.Grants())
	}

	must(t, l.Reserve(podA, Attach, []string{"GPU-0", "GPU-1"}, nodes))
	if s.saves != 0 || s.intents != 1 {
		t.Errorf("Reserve wrote %d ledgers and %d intents, want one intent", s.saves, s.intents)
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

// A live attach's write-ahead record goes to the intent file without an
// fsync; a restarted ledger takes it only when it was written on the ledger
// file's generation, and never trusts one a power loss could have torn.
func TestIntentFile(t *testing.T) {
	dir := t.TempDir()
	open := func() (*FileStore, *Ledger) {
		t.Helper()
		fs, err := NewFileStore(dir)
		must(t, err)
		l, err := New(fs)
		must(t, err)
		return fs, l
	}
	state := func(l *Ledger, u string) State {
		g, ok := l.Lookup(u)
		if !ok {
			return "free"
		}
		return g.State
	}
	fs, l := open()
	must(t, l.Acquire(podA, Attach, Active, "GPU-0"))
	ledgerFile, err := os.ReadFile(fs.Path)
	must(t, err)

	// a detach marks GPU-0 and hotgpud dies: the restart finds it Pending
	must(t, l.SetState(podA.ContainerID, Pending, "GPU-0"))
	if after, _ := os.ReadFile(fs.Path); string(after) != string(ledgerFile) {
		t.Fatal("the write-ahead record rewrote the ledger file")
	}
	if _, l2 := open(); state(l2, "GPU-0") != Pending {
		t.Fatalf("after a crash: GPU-0 %s, want pending from the intent", state(l2, "GPU-0"))
	}
	// the detach is done: the ledger file has the outcome, the intent is stale
	_, err = l.Release(podA.ContainerID, "GPU-0")
	must(t, err)
	if _, l2 := open(); state(l2, "GPU-0") != "free" {
		t.Fatalf("after the release: GPU-0 %s, want free (a stale intent taken?)", state(l2, "GPU-0"))
	}

	// an intent a power loss tore is ignored, and so is one on another generation
	must(t, l.Reserve(podA, Attach, []string{"GPU-1"}, nil))
	intent, err := os.ReadFile(fs.IntentPath)
	must(t, err)
	for name, data := range map[string][]byte{
		"torn":             intent[:len(intent)/2],
		"zeros":            make([]byte, len(intent)),
		"other generation": []byte(strings.Replace(string(intent), `"on":"`, `"on":"x`, 1)),
	} {
		must(t, os.WriteFile(fs.IntentPath, data, 0o600))
		if _, l2 := open(); state(l2, "GPU-1") != "free" {
			t.Errorf("%s intent: GPU-1 %s, want free", name, state(l2, "GPU-1"))
		}
	}

	// a ledger file from before generations: the first intent saves the ledger
	must(t, os.WriteFile(fs.Path, []byte(`{"version":1,"grants":[]}`), 0o600))
	must(t, os.Remove(fs.IntentPath))
	fs3, l3 := open()
	must(t, l3.Reserve(podB, Attach, []string{"GPU-2"}, nil))
	if _, err := os.Stat(fs3.IntentPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an intent on a ledger without a generation: %v, want the ledger saved instead", err)
	}
	if _, l4 := open(); state(l4, "GPU-2") != Pending {
		t.Errorf("GPU-2 %s after a restart, want pending", state(l4, "GPU-2"))
	}
}
