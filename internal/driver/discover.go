package driver

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// ErrNoDriverLibraries means no library of the driver's version was found
// under the driver root.
var ErrNoDriverLibraries = errors.New("no NVIDIA driver libraries found")

// Libraries is the "compute,utility" library set of libnvidia-container's
// nvc_info.c: what CUDA, OpenCL and NVML programs load. Graphics and video
// libraries are left out: hotgpu serves compute containers.
var Libraries = []string{
	"libnvidia-ml.so",  // utility: NVML
	"libnvidia-cfg.so", // utility: GPU configuration
	"libcuda.so",       // compute: the CUDA driver
	"libcudadebugger.so",
	"libnvidia-opencl.so",
	"libnvidia-gpucomp.so",
	"libnvidia-ptxjitcompiler.so",
	"libnvidia-fatbinaryloader.so", // drivers before 495
	"libnvidia-allocator.so",
	"libnvidia-compiler.so",
	"libnvidia-pkcs11.so", // confidential computing
	"libnvidia-pkcs11-openssl3.so",
	"libnvidia-nvvm.so",
}

// Binaries are the driver's tools a container may run (utility, compute).
var Binaries = []string{
	"nvidia-smi",
	"nvidia-debugdump",
	"nvidia-persistenced",
	"nvidia-cuda-mps-control",
	"nvidia-cuda-mps-server",
}

// OpenCLICD registers libnvidia-opencl with the OpenCL loader.
const OpenCLICD = "/etc/OpenCL/vendors/nvidia.icd"

// Sockets of the driver's daemons, given to containers when the daemon runs.
const (
	PersistencedSocket  = "/run/nvidia-persistenced/socket"
	FabricManagerSocket = "/run/nvidia-fabricmanager/socket"
	MPSPipeDir          = "/tmp/nvidia-mps"
)

// Kind says what a driver file is for; it decides how it is mounted.
type Kind string

// The kinds of driver files.
const (
	KindLibrary  Kind = "library"
	KindICD      Kind = "opencl-icd"
	KindBinary   Kind = "binary"
	KindFirmware Kind = "firmware"
	KindSocket   Kind = "socket"
	KindMPS      Kind = "mps"
)

// File is one file of the driver's user-space.
type File struct {
	// Path is the file's canonical path inside the driver root (no
	// symlink on it); the container sees it at the same path.
	Path string
	// Source, when set, is where the file is inside the driver root if the
	// container sees it at another path (firmware under merged /usr is
	// still looked for at /lib/firmware).
	Source string
	Kind   Kind
	// SONAME is the name the dynamic linker loads a library by
	// ("libcuda.so.1"), when it differs from the file's name and is known.
	SONAME string
}

// Driver is the driver's user-space found under a driver root.
type Driver struct {
	// Root is the host directory the driver is installed under ("/", or
	// /run/nvidia/driver with the GPU operator's driver container).
	Root string
	// Version is the driver version the libraries carry, as NVML reports it.
	Version string
	Files   []File
}

// triplet is the Debian multiarch directory of this architecture.
var triplet = map[string]string{
	"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
}[runtime.GOARCH]

// LibrarySearchDirs are searched, inside the driver root, for libraries the
// root's linker cache does not list. 32-bit directories (i386-linux-gnu,
// lib32) are not: a 64-bit container never loads them.
var LibrarySearchDirs = []string{
	"/usr/lib/" + triplet,
	"/usr/lib64",
	"/usr/lib",
	"/lib/" + triplet,
	"/lib64",
	"/usr/lib/" + triplet + "/nvidia/current", // Debian's nvidia-driver packages
}

var (
	binaryDirs   = []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"}
	firmwareDirs = []string{"/lib/firmware/nvidia", "/usr/lib/firmware/nvidia"}
)

// Discover finds the user-space of driver version under root. An empty
// version (an inventory that does not say) is the one the root's libcuda.so.1
// or libnvidia-ml.so.1 points at.
func Discover(root, version string) (*Driver, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("driver root %q must be an absolute path", root)
	}
	if version == "" {
		var err error
		if version, err = inferVersion(filepath.Clean(root)); err != nil {
			return nil, err
		}
	}
	if !isVersion(version) {
		return nil, fmt.Errorf("driver version %q is not a driver version (such as 580.95.05): the driver's libraries are found by it", version)
	}
	s := &search{root: filepath.Clean(root), version: version, seen: map[string]bool{}}
	s.readLDCache()
	d := &Driver{Root: s.root, Version: version}
	for _, name := range Libraries {
		if f, ok := s.library(name); ok {
			d.Files = append(d.Files, f)
		}
	}
	if len(d.Files) == 0 {
		return nil, s.noLibraries()
	}
	if d.has("libnvidia-opencl.so") {
		d.Files = append(d.Files, s.find(KindICD, OpenCLICD)...)
	}
	for _, name := range Binaries {
		d.Files = append(d.Files, s.first(KindBinary, binaryDirs, name)...)
	}
	d.Files = append(d.Files, s.firmware()...)
	d.Files = append(d.Files, s.find(KindSocket, PersistencedSocket, FabricManagerSocket)...)
	d.Files = append(d.Files, s.find(KindMPS, MPSPipeDir)...)
	return d, nil
}

// has reports whether the library name ("libcuda.so") was found.
func (d *Driver) has(name string) bool {
	return slices.ContainsFunc(d.Files, func(f File) bool { return libraryName(f) == name })
}

// libraryName is "libcuda.so" for a library file libcuda.so.580.95.05.
func libraryName(f File) string {
	if f.Kind != KindLibrary {
		return ""
	}
	base := path.Base(f.Path)
	if i := strings.Index(base, ".so."); i >= 0 {
		return base[:i+len(".so")]
	}
	return base
}

func isVersion(v string) bool {
	if v == "" || v[0] == '.' || v[len(v)-1] == '.' || strings.Contains(v, "..") {
		return false
	}
	return strings.Trim(v, "0123456789.") == ""
}

type search struct {
	root, version string
	ldcache       []LDCacheEntry
	seen          map[string]bool // canonical paths already found
}

// readLDCache reads the root's linker cache. A root without one (a minimal
// driver container) is searched through the standard directories only.
func (s *search) readLDCache() {
	p, err := resolve(s.root, LDCachePath)
	if err != nil {
		return
	}
	s.ldcache, _ = ReadLDCache(filepath.Join(s.root, p))
}

// library finds name.<version>: first where the linker cache points, then
// in the search directories. Only that exact file qualifies, so an older
// version left beside it is never taken.
func (s *search) library(name string) (File, bool) {
	want := name + "." + s.version
	var candidates []string
	for _, e := range s.ldcache {
		if e.Is64 && (e.Name == name || strings.HasPrefix(e.Name, name+".")) {
			candidates = append(candidates, e.Path)
		}
	}
	for _, dir := range LibrarySearchDirs {
		candidates = append(candidates, path.Join(dir, want))
	}
	for _, c := range candidates {
		p, err := resolve(s.root, c)
		if err != nil || path.Base(p) != want || s.seen[p] || !s.regular(p) {
			continue
		}
		soname, ok := s.soname(p)
		if !ok {
			continue // a 32-bit copy
		}
		s.seen[p] = true
		return File{Path: p, Kind: KindLibrary, SONAME: soname}, true
	}
	return File{}, false
}

// soname reads the library's SONAME; ok is false for a library this
// architecture cannot load. A file that is not ELF is taken as it is (its
// SONAME then comes from the linker cache, if it lists it).
func (s *search) soname(p string) (string, bool) {
	f, err := elf.Open(filepath.Join(s.root, p))
	if err != nil {
		return s.ldcacheSONAME(p), true
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 {
		return "", false
	}
	names, err := f.DynString(elf.DT_SONAME)
	if err != nil || len(names) == 0 || names[0] == path.Base(p) || strings.Contains(names[0], "/") {
		return "", true
	}
	return names[0], true
}

// ldcacheSONAME is the name under which the linker cache lists p, other
// than its own and the development link name.
func (s *search) ldcacheSONAME(p string) string {
	base := path.Base(p)
	for _, e := range s.ldcache {
		if !e.Is64 || e.Name == base || !strings.Contains(e.Name, ".so.") || strings.Contains(e.Name, "/") {
			continue
		}
		if r, err := resolve(s.root, e.Path); err == nil && r == p {
			return e.Name
		}
	}
	return ""
}

func (s *search) regular(p string) bool {
	info, err := os.Stat(filepath.Join(s.root, p))
	return err == nil && info.Mode().IsRegular()
}

// find returns those of paths that exist with the type kind needs.
func (s *search) find(kind Kind, paths ...string) []File {
	var out []File
	for _, p := range paths {
		r, err := resolve(s.root, p)
		if err != nil || s.seen[r] {
			continue
		}
		info, err := os.Stat(filepath.Join(s.root, r))
		if err != nil || !hasType(kind, info.Mode()) {
			continue
		}
		s.seen[r] = true
		out = append(out, File{Path: r, Kind: kind})
	}
	return out
}

func hasType(kind Kind, mode fs.FileMode) bool {
	switch kind {
	case KindSocket:
		return mode&fs.ModeSocket != 0
	case KindMPS:
		return mode.IsDir()
	}
	return mode.IsRegular()
}

// first returns name from the first of dirs that has it.
func (s *search) first(kind Kind, dirs []string, name string) []File {
	for _, dir := range dirs {
		if f := s.find(kind, path.Join(dir, name)); len(f) > 0 {
			return f
		}
	}
	return nil
}

// firmware returns the GSP firmware of this driver version.
func (s *search) firmware() []File {
	var out []File
	for _, dir := range firmwareDirs {
		matches, _ := filepath.Glob(filepath.Join(s.root, dir, s.version, "gsp_*.bin"))
		for _, m := range matches {
			for _, f := range s.find(KindFirmware, path.Join(dir, s.version, filepath.Base(m))) {
				f.Path, f.Source = path.Join(firmwareDirs[0], s.version, filepath.Base(m)), f.Path
				out = append(out, f)
			}
		}
	}
	return out
}
