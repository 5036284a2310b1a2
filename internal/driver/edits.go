package driver

import (
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hotgpu/hotgpu/internal/hookenv"
)

// Edits are what a container needs of the driver's user-space, whatever
// path gives it its GPUs: the mounts, then the symlinks and the linker
// cache update that Hooks performs inside the container.
type Edits struct {
	Mounts []Mount
	// Symlinks are created in the container, not bind-mounted: a link is
	// a name for a mounted file, and mounting the file a second time under
	// the link's name would make two copies the linker could both load.
	Symlinks []Symlink
	// LibraryDirs are the container directories holding the libraries,
	// for the linker cache.
	LibraryDirs []string
}

// Mount is a bind mount of a host file at a container path.
type Mount struct {
	HostPath, ContainerPath string
	Options                 []string
}

// Symlink is a link to create in the container: Link (absolute) -> Target
// (a name in the same directory).
type Symlink struct {
	Target, Link string
}

// String is the TARGET::LINK form hotgpu-hook create-symlinks takes.
func (l Symlink) String() string { return l.Target + "::" + l.Link }

// HookTimeout is the runtime's limit, in seconds, on each hook: the
// runtime kills a hook rather than hang container creation.
const HookTimeout = 10

// Hook is an OCI createContainer hook: it runs in the container's mount
// namespace after the mounts are made and before the container's process
// starts (and before a read-only root is made read-only).
type Hook struct {
	Path string
	Args []string
	Env  []string
}

var (
	readOnly  = []string{"ro", "nosuid", "nodev", "bind"}
	socketRO  = []string{"ro", "nosuid", "nodev", "noexec", "bind"}
	mpsPipeRW = []string{"nosuid", "nodev", "noexec", "bind"} // MPS clients create their pipes there
)

// Edits returns what a container needs to use the driver: every file
// mounted read-only at its own path (the MPS pipe directory writable), a
// SONAME link beside each library whose SONAME is not its file name, the
// unversioned libcuda.so -> libcuda.so.1 that programs built with -lcuda
// look for (Triton, torch.compile, vLLM), and the library directories.
func (d *Driver) Edits() Edits {
	var e Edits
	for _, f := range d.Files {
		opts := readOnly
		switch f.Kind {
		case KindSocket:
			opts = socketRO
		case KindMPS:
			opts = mpsPipeRW
		}
		source := f.Path
		if f.Source != "" {
			source = f.Source
		}
		e.Mounts = append(e.Mounts, Mount{HostPath: filepath.Join(d.Root, source), ContainerPath: f.Path, Options: slices.Clone(opts)})
		if f.Kind != KindLibrary {
			continue
		}
		dir := path.Dir(f.Path)
		if !slices.Contains(e.LibraryDirs, dir) {
			e.LibraryDirs = append(e.LibraryDirs, dir)
		}
		if f.SONAME == "" {
			continue
		}
		e.Symlinks = append(e.Symlinks, Symlink{Target: path.Base(f.Path), Link: path.Join(dir, f.SONAME)})
		if name := libraryName(f); name == "libcuda.so" && strings.HasPrefix(f.SONAME, name+".") {
			e.Symlinks = append(e.Symlinks, Symlink{Target: f.SONAME, Link: path.Join(dir, name)})
		}
	}
	return e
}

// Hooks returns the createContainer hooks that finish e inside the
// container with hotgpu-hook at hookPath, in order: the symlinks first, so
// that the linker cache lists them. They run with hotgpu-hook's own fixed
// environment, never the runtime's or the container's.
func (e Edits) Hooks(hookPath string) []Hook {
	var hooks []Hook
	argv0 := path.Base(hookPath)
	if len(e.Symlinks) > 0 {
		args := []string{argv0, "create-symlinks"}
		for _, l := range e.Symlinks {
			args = append(args, "--link", l.String())
		}
		hooks = append(hooks, Hook{Path: hookPath, Args: args, Env: slices.Clone(hookenv.Env)})
	}
	if len(e.LibraryDirs) > 0 {
		args := []string{argv0, "update-ldcache"}
		for _, d := range e.LibraryDirs {
			args = append(args, "--folder", d)
		}
		hooks = append(hooks, Hook{Path: hookPath, Args: args, Env: slices.Clone(hookenv.Env)})
	}
	return hooks
}
