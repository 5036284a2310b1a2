package ledger

import (
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
	Version int     `json:"version"`
	Grants  []Grant `json:"grants"`
}

// FileStore keeps the ledger in one JSON file, replaced atomically.
type FileStore struct {
	Path string
}

// NewFileStore returns a store at dir/ledger.json, creating dir (0700).
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create state dir %s: %w", dir, err)
	}
	return &FileStore{Path: filepath.Join(dir, "ledger.json")}, nil
}

// Load reads the file; a missing file is an empty ledger.
func (s *FileStore) Load() ([]Grant, error) {
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
	for _, g := range f.Grants {
		if g.GPU == "" || (g.State != Pending && g.State != Active) {
			return nil, fmt.Errorf("%w: %s: invalid grant %+v", ErrCorrupt, s.Path, g)
		}
	}
	return f.Grants, nil
}

// Save writes grants with WriteFileAtomic (temp file, fsync, rename; the
// directory is not fsynced, see there), so a crash of hotgpud leaves either
// the old or the new ledger, never a torn one.
func (s *FileStore) Save(grants []Grant) error {
	if grants == nil {
		grants = []Grant{}
	}
	data, err := json.MarshalIndent(fileFormat{Version: fileVersion, Grants: grants}, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.Path, data, 0o600)
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
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
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
	if err = f.Sync(); err != nil {
		return fmt.Errorf("failed to sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("failed to replace %s: %w", path, err)
	}
	return nil
}
