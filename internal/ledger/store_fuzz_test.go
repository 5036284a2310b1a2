package ledger

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzFileStoreLoad: the state file may be torn, truncated or replaced by
// garbage. Load either returns ErrCorrupt (the daemon then moves the file
// aside and rebuilds from the live containers) or a ledger whose every
// grant is valid; it never panics and never turns a damaged file into a
// silently smaller ledger.
func FuzzFileStoreLoad(f *testing.F) {
	valid := validState(f)
	f.Add(valid, uint16(len(valid)))
	f.Add(valid, uint16(len(valid)/2))
	f.Add([]byte(`{"version":1,"grants":[{"gpu":"GPU-1","state":"active"},{"gpu":"GPU-1","state":"active"}]}`), uint16(200))
	f.Add([]byte("null"), uint16(4))
	f.Add([]byte{}, uint16(0))
	f.Add([]byte(`{"version":2,"grants":[]}`), uint16(30))
	store := &FileStore{Path: filepath.Join(f.TempDir(), "ledger.json")}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		if int(cut) < len(data) {
			data = data[:cut]
		}
		if err := os.WriteFile(store.Path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := New(store)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damaged state file: error %v is not ErrCorrupt, so the daemon would not recover", err)
			}
			return
		}
		for _, g := range l.Grants() {
			if g.GPU == "" || (g.State != Pending && g.State != Active) {
				t.Fatalf("loaded invalid grant %+v", g)
			}
		}
		// A strict prefix of a real state file with grants is never accepted.
		if len(data) < len(valid) && bytes.HasPrefix(valid, data) && len(bytes.TrimSpace(data)) < len(bytes.TrimSpace(valid)) {
			t.Fatalf("truncated state file (%d of %d bytes) loaded as %d grants", len(data), len(valid), len(l.Grants()))
		}
	})
}

func validState(f *testing.F) []byte {
	f.Helper()
	store := &FileStore{Path: filepath.Join(f.TempDir(), "ledger.json")}
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	err := store.Save([]Grant{
		{GPU: "GPU-a", Holder: Holder{ContainerID: "c1", PodNamespace: "ml", PodName: "p", PodUID: "u1"}, Reason: Annotation, State: Active, Since: since},
		{GPU: "GPU-b", Holder: Holder{ContainerID: "c2", PID: 42, Cgroup: "/x"}, Reason: Attach, State: Pending, Since: since},
	})
	if err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(store.Path)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
