package cdi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// ErrNoDriverLibraries means no driver library was found under the driver root.
var ErrNoDriverLibraries = errors.New("no NVIDIA driver libraries found")

// driverLibraries is the short list of user-space driver libraries CUDA and
// NVML programs load: the CUDA driver, NVML, the PTX JIT and NVVM compilers
// (and gpucomp, which newer JITs link against). Graphics, video and OpenCL
// libraries are left out on purpose: hotgpu targets compute containers.
var driverLibraries = []string{
	"libcuda.so.*",
	"libnvidia-ml.so.*",
	"libnvidia-ptxjitcompiler.so.*",
	"libnvidia-nvvm.so.*",
	"libnvidia-gpucomp.so.*",
}

// driverBinaries are the driver's tools useful inside a container.
var driverBinaries = []string{
	"nvidia-smi",
	"nvidia-debugdump",
	"nvidia-persistenced",
	"nvidia-cuda-mps-control",
	"nvidia-cuda-mps-server",
}

var libDirs = gpu.DriverLibraryDirs

var binDirs = []string{"usr/bin", "usr/sbin", "bin", "sbin"}

// driverFiles are found files, as paths inside the driver root ("/usr/...").
type driverFiles struct {
	files   []string
	libDirs []string // directories holding libraries, for the ldcache hook
}

// findDriverFiles finds the driver's libraries and binaries under root. At
// least one library must exist: a spec without them would give containers
// device nodes they cannot use.
func findDriverFiles(root string) (driverFiles, error) {
	var found driverFiles
	libs, err := glob(root, libDirs, driverLibraries)
	if err != nil {
		return found, err
	}
	if len(libs) == 0 {
		return found, fmt.Errorf("%w under driver root %s (searched %s for %s): point --driver-root at the root the NVIDIA driver is installed in (/ or, with a driver container, /run/nvidia/driver)",
			ErrNoDriverLibraries, root, strings.Join(libDirs, ", "), strings.Join(driverLibraries, ", "))
	}
	bins, err := glob(root, binDirs, driverBinaries)
	if err != nil {
		return found, err
	}
	for _, l := range libs {
		if dir := filepath.Dir(l); !slices.Contains(found.libDirs, dir) {
			found.libDirs = append(found.libDirs, dir)
		}
	}
	found.files = append(libs, bins...)
	return found, nil
}

// glob returns the files matching patterns in dirs under root, as paths
// inside root. Directories that resolve to one already searched (merged /usr:
// /lib -> usr/lib) are skipped so no file is mounted twice.
func glob(root string, dirs, patterns []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, dir := range dirs {
		resolved, err := filepath.EvalSymlinks(filepath.Join(root, dir))
		if err != nil || seen[resolved] {
			continue // absent directories are normal
		}
		seen[resolved] = true
		for _, pattern := range patterns {
			matches, err := filepath.Glob(filepath.Join(root, dir, pattern))
			if err != nil {
				return nil, fmt.Errorf("failed to search %s: %w", dir, err)
			}
			for _, m := range matches {
				if info, err := os.Stat(m); err == nil && !info.IsDir() {
					out = append(out, "/"+filepath.Join(dir, filepath.Base(m)))
				}
			}
		}
	}
	return out, nil
}

// mounts bind-mounts every file read-only at the same path in the container.
func (f driverFiles) mounts(root string) []*specs.Mount {
	mounts := make([]*specs.Mount, 0, len(f.files))
	for _, p := range f.files {
		mounts = append(mounts, &specs.Mount{
			HostPath:      filepath.Join(root, p),
			ContainerPath: p,
			Options:       []string{"ro", "nosuid", "nodev", "bind"},
		})
	}
	return mounts
}
