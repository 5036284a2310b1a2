// Package drivertest builds fake NVIDIA driver roots laid out like a real
// install, for the tests of package driver, of the CDI spec and of the
// integration suites that mount one into real containers.
//
// A root has what a Debian/Ubuntu host with the 580 runfile or packages has:
// versioned libraries that are ELF shared objects with their SONAME, the
// SONAME and development symlink chains (libcuda.so -> libcuda.so.1 ->
// libcuda.so.580.95.05), a stale older version left beside them, 32-bit
// copies under /usr/lib/i386-linux-gnu, graphics libraries that compute
// containers do not get, merged /usr (/lib -> usr/lib), an ld.so.cache
// listing them all, GSP firmware, the tools and the OpenCL ICD file.
package drivertest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Versions of a fake root: the current driver and a stale one whose files
// an upgrade left behind.
const (
	Version      = "580.95.05"
	StaleVersion = "570.172.08"
)

// LibDir is where the 64-bit libraries are, inside the root.
const LibDir = "/usr/lib/x86_64-linux-gnu"

// lib32Dir holds the 32-bit copies.
const lib32Dir = "/usr/lib/i386-linux-gnu"

// Options change the fake root.
type Options struct {
	// Version is the driver version of the libraries (default Version).
	// Use the simulation's version (nvml's dgxa100 preset reports
	// 550.54.15) for a root that hotgpud --simulate finds its files in.
	Version string
	// NoLDCache leaves /etc/ld.so.cache out, as in a minimal driver
	// container, so libraries are found through the search paths only.
	NoLDCache bool
	// Daemons adds the persistenced and fabricmanager sockets and the MPS
	// pipe directory.
	Daemons bool
}

// Library is a library of the fake root.
type Library struct {
	Name   string // "libcuda.so"
	SONAME string // "libcuda.so.1", or the versioned name when it is its own SONAME
}

// Compute are the compute and utility libraries a 580 install has, with
// their SONAMEs ("" means the versioned file name).
var Compute = []Library{
	{"libcuda.so", "libcuda.so.1"},
	{"libcudadebugger.so", "libcudadebugger.so.1"},
	{"libnvidia-ml.so", "libnvidia-ml.so.1"},
	{"libnvidia-cfg.so", "libnvidia-cfg.so.1"},
	{"libnvidia-opencl.so", "libnvidia-opencl.so.1"},
	{"libnvidia-ptxjitcompiler.so", "libnvidia-ptxjitcompiler.so.1"},
	{"libnvidia-allocator.so", "libnvidia-allocator.so.1"},
	{"libnvidia-nvvm.so", "libnvidia-nvvm.so.4"},
	{"libnvidia-gpucomp.so", ""},
	{"libnvidia-pkcs11.so", ""},
	{"libnvidia-pkcs11-openssl3.so", ""},
}

// Graphics are libraries of the same install that compute containers do
// not get.
var Graphics = []Library{
	{"libnvidia-glcore.so", ""},
	{"libnvidia-encode.so", "libnvidia-encode.so.1"},
}

// Binaries are the tools installed in /usr/bin.
var Binaries = []string{"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"}

// Firmware are the GSP firmware files of the version.
var Firmware = []string{"gsp_ga10x.bin", "gsp_tu10x.bin"}

// Root is a fake driver root.
type Root struct {
	Dir     string // the root on the host
	Version string
}

// New builds a fake driver root in a temporary directory of t.
func New(t testing.TB, opts Options) *Root {
	t.Helper()
	r, err := Build(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("failed to build a fake driver root: %v", err)
	}
	return r
}

// Build lays out a fake driver root in dir, which should be empty.
func Build(dir string, opts Options) (*Root, error) {
	if opts.Version == "" {
		opts.Version = Version
	}
	b := &builder{dir: dir}
	b.symlink("usr/lib", "/lib") // merged /usr, as every current distribution
	var cache []CacheEntry
	for _, l := range append(append([]Library{}, Compute...), Graphics...) {
		cache = append(cache, b.library(LibDir, l, opts.Version, true)...)
	}
	// An upgrade leaves the old version's files; nothing links to them.
	b.file(path.Join(LibDir, "libcuda.so."+StaleVersion), sharedObject("libcuda.so.1", true), 0o644)
	b.file(path.Join(LibDir, "libnvidia-ml.so."+StaleVersion), sharedObject("libnvidia-ml.so.1", true), 0o644)
	for _, l := range []Library{Compute[0], Compute[2]} {
		cache = append(cache, b.library(lib32Dir, l, opts.Version, false)...)
	}
	for _, bin := range Binaries {
		b.file(path.Join("/usr/bin", bin), []byte("#!/bin/sh\necho fake "+bin+"\n"), 0o755)
	}
	for _, fw := range Firmware {
		b.file(path.Join("/lib/firmware/nvidia", opts.Version, fw), []byte("fake GSP firmware\n"), 0o644)
	}
	b.file("/etc/OpenCL/vendors/nvidia.icd", []byte("libnvidia-opencl.so.1\n"), 0o644)
	if !opts.NoLDCache {
		cache = append(cache, CacheEntry{Name: "libc.so.6", Path: LibDir + "/libc.so.6", Is64: true})
		b.file("/etc/ld.so.cache", LDCache(cache), 0o644)
	}
	if opts.Daemons {
		b.socket("/run/nvidia-persistenced/socket")
		b.socket("/run/nvidia-fabricmanager/socket")
		b.mkdir("/tmp/nvidia-mps")
	}
	if b.err != nil {
		return nil, b.err
	}
	return &Root{Dir: dir, Version: opts.Version}, nil
}

// library writes name.<version> in dir with its SONAME link and, for the
// libraries that have one, the development link, and returns what
// ldconfig would list for them.
func (b *builder) library(dir string, l Library, version string, is64 bool) []CacheEntry {
	file := l.Name + "." + version
	soname := l.SONAME
	if soname == "" {
		soname = file
	}
	b.file(path.Join(dir, file), sharedObject(soname, is64), 0o755)
	entries := []CacheEntry{{Name: soname, Path: path.Join(dir, soname), Is64: is64}}
	if soname != file {
		b.symlink(file, path.Join(dir, soname))
	}
	if l.Name == "libcuda.so" || l.Name == "libnvidia-ml.so" {
		b.symlink(soname, path.Join(dir, l.Name))
		entries = append(entries, CacheEntry{Name: l.Name, Path: path.Join(dir, l.Name), Is64: is64})
	}
	return entries
}

// builder keeps the first error, so Build reads as the layout it makes.
type builder struct {
	dir string
	err error
}

func (b *builder) host(p string) string { return filepath.Join(b.dir, p) }

func (b *builder) mkdir(p string) {
	if b.err == nil {
		b.err = os.MkdirAll(b.host(p), 0o755)
	}
}

func (b *builder) file(p string, data []byte, mode os.FileMode) {
	b.mkdir(path.Dir(p))
	if b.err == nil {
		b.err = os.WriteFile(b.host(p), data, mode)
	}
}

func (b *builder) symlink(target, link string) {
	b.mkdir(path.Dir(link))
	if b.err == nil {
		b.err = os.Symlink(target, b.host(link))
	}
}

// socket makes a socket inode, as a daemon's listening socket looks on
// disk; nothing listens on it.
func (b *builder) socket(p string) {
	b.mkdir(path.Dir(p))
	if b.err == nil {
		if err := unix.Mknod(b.host(p), unix.S_IFSOCK|0o666, 0); err != nil {
			b.err = fmt.Errorf("failed to create the socket %s: %w", b.host(p), err)
		}
	}
}
