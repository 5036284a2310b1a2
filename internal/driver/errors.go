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
