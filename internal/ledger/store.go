package ledger

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrCorrupt is returned when the state file exists but cannot be read as a
// ledger (torn write, garbage, duplicate GPUs). The daemon moves it aside and
// rebuilds from the containers that really exist; it never pretends the
// ledger was empty.
var ErrCorrupt = errors.New("ledger state file is corrupt")

const fileVersion = 1

type fileFormat struct {
	Version int `json:"version"`
	// Generation names this write of the ledger (random): an intent
	// applies only on top of the generation it was written on.
	Generation string  `json:"generation,omitempty"`
	Grants     []Grant `json:"grants"`
}

// intentFormat is the intent file: the whole ledger as a write-ahead record
// left it, on top of ledger generation On.
type intentFormat struct {
	Version int     `json:"version"`
	On      string  `json:"on"`
	Grants  []Grant `json:"grants"`
}

// FileStore keeps the ledger in one JSON file, replaced atomically and
// fsynced, and the last write-ahead record (IntentStore) beside it in
// IntentPath, replaced atomically without an fsync.
type FileStore struct {
	Path, IntentPath string
	// generation is the ledger file's, as last loaded or saved; intents
	// says that an intent file may be there.
	generation string
	intents    bool
}

// NewFileStore returns a store at dir/ledger.json, with its intents in
// dir/ledger.intent.json, creating dir (0700).
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create state dir %s: %w", dir, err)
	}
	return &FileStore{Path: filepath.Join(dir, "ledger.json"), IntentPath: filepath.Join(dir, "ledger.intent.json")}, nil
}

// Load reads the ledger file, and returns the intent file's grants instead
// when the intent was written on top of that very ledger (it is the newer
// state: hotgpud stopped before the work it announced was recorded done). A
// missing ledger file is an empty ledger. An intent written on another
// generation is stale; one that cannot be read is what a power loss can
// leave of a file never fsynced, and is ignored too: the containers it
// described are gone with the power.
func (s *FileStore) Load() ([]Grant, error) {
	s.intents = true // one may be left by an earlier run: the next Save removes it
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read ledger: %w", err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.Path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want %d", ErrCorrupt, s.Path, f.Version, fileVersion)
	}
	if err := validGrants(f.Grants); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.Path, err)
	}
	s.generation = f.Generation
	if in, ok := s.intent(); ok {
		return in, nil
	}
	return f.Grants, nil
}

// intent returns the intent file's grants when it applies to the ledger
// generation loaded.
func (s *FileStore) intent() ([]Grant, bool) {
	if s.IntentPath == "" || s.generation == "" {
		return nil, false
	}
	data, err := os.ReadFile(s.IntentPath)
	if err != nil {
		return nil, false
	}
	var in intentFormat
	if json.Unmarshal(data, &in) != nil || in.Version != fileVersion || in.On != s.generation || validGrants(in.Grants) != nil {
		return nil, false
	}
	return in.Grants, true
}

func validGrants(grants []Grant) error {
	for _, g := range grants {
		if g.GPU == "" || (g.State != Pending && g.State != Active) {
			return fmt.Errorf("invalid grant %+v", g)
		}
	}
	return nil
}

// Save writes grants with WriteFileAtomic (temp file, fsync, rename; the
// directory is not fsynced, see there), so a crash of hotgpud leaves either
// the old or the new ledger, never a torn one, under a new generation: the
// intent file, written on an older one, no longer applies.
func (s *FileStore) Save(grants []Grant) error {
	if grants == nil {
		grants = []Grant{}
	}
	var gen [8]byte
	if _, err := rand.Read(gen[:]); err != nil {
		return err
	}
	f := fileFormat{Version: fileVersion, Generation: hex.EncodeToString(gen[:]), Grants: grants}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(s.Path, data, 0o600); err != nil {
		return err
	}
	s.generation = f.Generation
	if s.intents {
		// stale now (another generation), and a state dir is easier read
		// without a file of grants that no longer are; failing to remove
		// it changes nothing
		_ = os.Remove(s.IntentPath)
		s.intents = false
	}
	return nil
}

// SaveIntent implements IntentStore: it replaces the intent file (temp
// file, rename: a crash of hotgpud leaves the old or the new one) without
// an fsync, on top of the ledger's generation. The ledger file itself is
// not written, so it is never left unsynced. Without a generation yet (a
// ledger written before there were any), it saves the ledger instead.
func (s *FileStore) SaveIntent(grants []Grant) error {
	if s.IntentPath == "" || s.generation == "" {
		return s.Save(grants)
	}
	if grants == nil {
		grants = []Grant{}
	}
	data, err := json.Marshal(intentFormat{Version: fileVersion, On: s.generation, Grants: grants})
	if err != nil {
		return err
	}
	s.intents = true
	return writeFileRenamed(s.IntentPath, data, 0o600, false)
}

// MoveAside renames a corrupt state file out of the way and returns its new
// name, keeping it for a post-mortem.
func (s *FileStore) MoveAside(suffix string) (string, error) {
	dst := s.Path + ".corrupt-" + suffix
	if err := os.Rename(s.Path, dst); err != nil {
		return "", fmt.Errorf("failed to move corrupt ledger aside: %w", err)
	}
	return dst, nil
}

// WriteFileAtomic replaces path with data: temp file in the same directory,
// fsync, rename. On error no temp file is left.
//
// The rename is atomic against a crash of hotgpud (kill -9 leaves the old or
// the new ledger, never a torn one; the crash tests prove it) and the fsync
// means a power loss never leaves an empty or garbage file. The directory is
// deliberately not fsynced: that only makes the rename itself survive a power
// loss, and after a power loss every container the ledger describes is gone
// and the first NRI Synchronize releases its grants anyway. Skipping it
// halves the cost of every durable change on our disks (see
// BenchmarkAcquireRelease).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileRenamed(path, data, perm, true)
}

// writeFileRenamed is WriteFileAtomic, fsyncing the temp file only when
// sync is set.
func writeFileRenamed(path string, data []byte, perm os.FileMode, sync bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if sync {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("failed to sync %s: %w", path, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("failed to replace %s: %w", path, err)
	}
	return nil
}
