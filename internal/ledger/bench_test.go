package ledger

import "testing"

// BenchmarkAcquireRelease is one durable grant and one durable release:
// what every attach, detach, CreateContainer and Allocate pays to the disk.
func BenchmarkAcquireRelease(b *testing.B) {
	s, err := NewFileStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	l, err := New(s)
	if err != nil {
		b.Fatal(err)
	}
	h := Holder{ContainerID: "c0ffee", PodNamespace: "ml", PodName: "p", PodUID: "u"}
	for b.Loop() {
		if err := l.Acquire(h, Attach, Active, "GPU-0"); err != nil {
			b.Fatal(err)
		}
		if _, err := l.Release(h.ContainerID); err != nil {
			b.Fatal(err)
		}
	}
}
