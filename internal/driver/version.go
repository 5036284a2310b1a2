package driver

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// noLibraries explains an empty result: where it looked, and whether the
// libraries of another version are there, which means the kernel module and
// the installed user-space differ (an upgrade without a reload).
func (s *search) noLibraries() error {
	where := "its linker cache (" + LDCachePath + ") and " + strings.Join(LibrarySearchDirs, ", ")
	if others := s.otherVersions("libcuda.so", "libnvidia-ml.so"); len(others) > 0 {
		return fmt.Errorf("%w for driver %s under driver root %s, only %s: the loaded driver and its installed libraries differ (driver/library version mismatch); reload the nvidia kernel modules or reboot",
			ErrNoDriverLibraries, s.version, s.root, strings.Join(others, ", "))
	}
	return fmt.Errorf("%w for driver %s under driver root %s (searched %s for %s.%s): point --driver-root at the root the NVIDIA driver is installed in (/ or, with a driver container, /run/nvidia/driver)",
		ErrNoDriverLibraries, s.version, s.root, where, "libcuda.so", s.version)
}

// otherVersions lists the versioned files of names of any version.
func (s *search) otherVersions(names ...string) []string {
	var out []string
	for _, dir := range LibrarySearchDirs {
		for _, name := range names {
			matches, _ := filepath.Glob(filepath.Join(s.root, dir, name+".*.*"))
			for _, m := range matches {
				if p := path.Join(dir, filepath.Base(m)); !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// inferVersion finds the driver version from the libraries themselves: the
// file the SONAME link libcuda.so.1 (or libnvidia-ml.so.1) points at, else
// the only version whose files are there.
func inferVersion(root string) (string, error) {
	s := &search{root: root}
	s.readLDCache()
	for _, name := range []string{"libcuda.so", "libnvidia-ml.so"} {
		for _, dir := range LibrarySearchDirs {
			p, err := resolve(root, path.Join(dir, name+".1"))
			if v := strings.TrimPrefix(path.Base(p), name+"."); err == nil && v != path.Base(p) && isVersion(v) && v != "1" {
				return v, nil
			}
		}
	}
	versions := map[string]bool{}
	for _, p := range s.otherVersions("libcuda.so") {
		versions[strings.TrimPrefix(path.Base(p), "libcuda.so.")] = true
	}
	if len(versions) == 1 {
		for v := range versions {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w under driver root %s: the driver version is unknown and the libraries do not tell it (found %d versions of libcuda.so); give the version NVML reports",
		ErrNoDriverLibraries, root, len(versions))
}
