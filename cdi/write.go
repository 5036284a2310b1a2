package cdi

import (
	"fmt"
	"os"
	"path/filepath"

	"tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"
)

// Formats Encode and Write understand.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
)

// SpecFile is the name of hotgpu's spec in a spec directory, "hotgpu.yaml"
// for FormatYAML: the same for hotgpud and `hotgpu cdi generate`, because
// two files in one directory that define the same device names make the
// CDI library refuse both.
func SpecFile(format string) string { return "hotgpu." + format }

// Write validates spec with the CDI library and publishes it as dir/name
// atomically: the library writes it into a private staging directory inside
// dir, it is fsynced, then renamed over dir/name and dir is fsynced. Runtimes
// watching dir see either the old spec or the new one, never a partial file,
// and the staging directory is invisible to them (CDI skips subdirectories).
// name's extension (.yaml or .json) picks the encoding; without one, .yaml
// is appended. It returns the path written.
func Write(spec *specs.Spec, dir, name string) (string, error) {
	if name != filepath.Base(name) || name == "." || name == ".." {
		return "", fmt.Errorf("invalid CDI spec file name %q: give a plain file name", name)
	}
	if ext := filepath.Ext(name); ext != ".yaml" && ext != ".json" {
		name += ".yaml"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", writeError(dir, err)
	}
	staging, err := os.MkdirTemp(dir, ".hotgpu-staging-")
	if err != nil {
		return "", writeError(dir, err)
	}
	defer os.RemoveAll(staging)
	staged, err := writeWithLibrary(spec, staging, name)
	if err != nil {
		return "", err
	}
	if err := syncPath(staged); err != nil {
		return "", writeError(dir, err)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(staged, final); err != nil {
		return "", writeError(dir, err)
	}
	if err := syncPath(dir); err != nil {
		return "", writeError(dir, err)
	}
	return final, nil
}

// Encode returns the spec as the CDI library writes it, after the library
// validated it. format is FormatYAML or FormatJSON.
func Encode(spec *specs.Spec, format string) ([]byte, error) {
	if format != FormatYAML && format != FormatJSON {
		return nil, fmt.Errorf("unknown CDI spec format %q: use yaml or json", format)
	}
	dir, err := os.MkdirTemp("", "hotgpu-cdi-")
	if err != nil {
		return nil, fmt.Errorf("failed to create a temporary directory to encode the CDI spec: %w", err)
	}
	defer os.RemoveAll(dir)
	path, err := writeWithLibrary(spec, dir, "spec."+format)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// writeWithLibrary lets the CDI library validate and encode spec into dir.
func writeWithLibrary(spec *specs.Spec, dir, name string) (string, error) {
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err != nil {
		return "", fmt.Errorf("failed to set up the CDI library: %w", err)
	}
	if err := cache.WriteSpec(spec, name); err != nil {
		return "", fmt.Errorf("failed to validate and write CDI spec %s: %w", spec.Kind, err)
	}
	return filepath.Join(dir, name), nil
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func writeError(dir string, err error) error {
	return fmt.Errorf("failed to write CDI spec to %s: %w: check that the directory is writable by this user (spec directories such as /etc/cdi and /var/run/cdi belong to root)", dir, err)
}
