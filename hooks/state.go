package hooks

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	oci "github.com/opencontainers/runtime-spec/specs-go"
)

// containerRoot reads the OCI state the runtime writes on a hook's stdin and
// returns the host path of the container's root filesystem.
func containerRoot(stdin io.Reader) (string, error) {
	var state oci.State
	if err := json.NewDecoder(stdin).Decode(&state); err != nil {
		return "", fmt.Errorf("failed to read the OCI state on stdin: %w: this command is meant to be run by a container runtime as a hook", err)
	}
	if !filepath.IsAbs(state.Bundle) {
		return "", fmt.Errorf("failed to find the container's bundle: OCI state of %q has bundle %q, want an absolute path", state.ID, state.Bundle)
	}
	data, err := os.ReadFile(filepath.Join(state.Bundle, "config.json"))
	if err != nil {
		return "", fmt.Errorf("failed to read the container's config: %w", err)
	}
	var spec oci.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("failed to parse %s: %w", filepath.Join(state.Bundle, "config.json"), err)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return "", fmt.Errorf("failed to find the container's root: %s has no root.path", filepath.Join(state.Bundle, "config.json"))
	}
	if filepath.IsAbs(spec.Root.Path) {
		return filepath.Clean(spec.Root.Path), nil
	}
	return filepath.Join(state.Bundle, spec.Root.Path), nil // relative to the bundle, per the OCI spec
}
