package hooks

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	oci "github.com/opencontainers/runtime-spec/specs-go"
)

// maxState bounds what is read from stdin and from config.json: both come
// from the runtime, but config.json carries user input (env, annotations).
const maxState = 4 << 20

// container is what a hook learns about the container it runs for.
type container struct {
	state oci.State
	spec  oci.Spec
	// rootfs is the host path of the container's root filesystem.
	rootfs string
}

// readContainer reads the OCI state the runtime writes on a hook's stdin and
// the bundle's config.json it points at.
func readContainer(stdin io.Reader) (*container, error) {
	var c container
	if err := json.NewDecoder(io.LimitReader(stdin, maxState)).Decode(&c.state); err != nil {
		return nil, fmt.Errorf("failed to read the OCI state on stdin: %w: this command is meant to be run by a container runtime as a hook", err)
	}
	if !filepath.IsAbs(c.state.Bundle) {
		return nil, fmt.Errorf("failed to find the container's bundle: OCI state of %q has bundle %q, want an absolute path", c.state.ID, c.state.Bundle)
	}
	config := filepath.Join(c.state.Bundle, "config.json")
	f, err := os.Open(config)
	if err != nil {
		return nil, fmt.Errorf("failed to read the container's config: %w", err)
	}
	defer f.Close()
	if err := json.NewDecoder(io.LimitReader(f, maxState)).Decode(&c.spec); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", config, err)
	}
	if c.spec.Root == nil || c.spec.Root.Path == "" {
		return nil, fmt.Errorf("failed to find the container's root: %s has no root.path", config)
	}
	c.rootfs = filepath.Clean(c.spec.Root.Path)
	if !filepath.IsAbs(c.rootfs) {
		c.rootfs = filepath.Join(c.state.Bundle, c.spec.Root.Path) // relative to the bundle, per the OCI spec
	}
	return &c, nil
}

// containerRoot reads the OCI state on stdin and returns the host path of
// the container's root filesystem.
func containerRoot(stdin io.Reader) (string, error) {
	c, err := readContainer(stdin)
	if err != nil {
		return "", err
	}
	return c.rootfs, nil
}
