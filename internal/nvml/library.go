package nvml

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

const nvmlLibrary = "libnvidia-ml.so.1"

var libDirs = gpu.DriverLibraryDirs

// loadLibrary finds libnvidia-ml.so.1 under root and returns an NVML bound to
// it. With root "/" and no file found in the usual places it falls back to
// the dynamic loader's own search (ld.so.cache), which knows distribution
// specific directories. Loading itself happens in Init.
func loadLibrary(root string) (nvml.Interface, error) {
	if path, ok := findLibrary(root); ok {
		return nvml.New(nvml.WithLibraryPath(path)), nil
	}
	if root == "/" {
		return nvml.New(), nil
	}
	return nil, missingError(root, searched(root))
}

func findLibrary(root string) (string, bool) {
	for _, dir := range libDirs {
		path := filepath.Join(root, dir, nvmlLibrary)
		if _, err := os.Stat(path); err == nil {
			return path, true
		}
	}
	return "", false
}

func searched(root string) []string {
	dirs := make([]string, len(libDirs))
	for i, d := range libDirs {
		dirs[i] = filepath.Join(root, d)
	}
	return dirs
}

// missingError explains that NVML is absent and what to do about it.
func missingError(root string, dirs []string) error {
	where := fmt.Sprintf("under driver root %s", root)
	if len(dirs) > 0 {
		where += " (searched " + strings.Join(dirs, ", ") + ")"
	}
	return fmt.Errorf("%w %s: install the NVIDIA driver, point --driver-root at the root it is installed in, or, to run without a GPU, use --simulate dgxa100", ErrNVMLMissing, where)
}
