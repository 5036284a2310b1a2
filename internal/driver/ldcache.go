package driver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// LDCachePath is where glibc keeps its linker cache, inside a root.
const LDCachePath = "/etc/ld.so.cache"

// The glibc ld.so.cache formats: the old one (libc5 era, still written in
// front of the new one by glibc < 2.32) and "glibc-ld.so.cache1.1", which
// glibc >= 2.32 writes alone. See glibc's sysdeps/generic/dl-cache.h.
const (
	oldMagic = "ld.so-1.7.0"
	newMagic = "glibc-ld.so.cache1.1"

	oldHeaderSize = len(oldMagic) + 1 + 4 // magic with its NUL, nlibs
	oldEntrySize  = 12                    // flags, key, value
	newHeaderSize = 48                    // magic+version, nlibs, len_strings, flags, pad, ext offset, unused
	newEntrySize  = 24                    // flags, key, value, osversion, hwcap

	flagTypeMask   = 0x00ff
	flagELF        = 0x0001
	flagArchMask   = 0xff00
	flagX8664      = 0x0300
	flagAArch64    = 0x0a00
	flagPPC64LE    = 0x0500
	flagRISCVLP64D = 0x1000
)

// ErrInvalidLDCache means a file is not a glibc ld.so.cache.
var ErrInvalidLDCache = errors.New("invalid ld.so.cache")

// LDCacheEntry is one library in a linker cache.
type LDCacheEntry struct {
	// Name is what the dynamic linker looks up: a SONAME ("libcuda.so.1")
	// or a development link name ("libcuda.so").
	Name string
	// Path is where the library is, as seen from the root the cache
	// belongs to.
	Path string
	// Is64 tells 64-bit libraries (x86-64, aarch64, ppc64le, riscv64)
	// from 32-bit ones, which a 64-bit container never loads.
	Is64 bool
}

// ReadLDCache reads and parses a linker cache file.
func ReadLDCache(path string) ([]LDCacheEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the linker cache: %w", err)
	}
	entries, err := ParseLDCache(data)
	if err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return entries, nil
}

// ParseLDCache parses a linker cache in the new format, alone or after the
// old one. Entries that are not ELF libraries, or whose strings fall outside
// the file, are skipped: the cache describes the host, and a damaged entry
// must not hide the others.
func ParseLDCache(data []byte) ([]LDCacheEntry, error) {
	start := 0
	if bytes.HasPrefix(data, []byte(oldMagic)) {
		if len(data) < oldHeaderSize {
			return nil, fmt.Errorf("%w: truncated old-format header", ErrInvalidLDCache)
		}
		n := int(binary.LittleEndian.Uint32(data[len(oldMagic)+1:]))
		start = oldHeaderSize + n*oldEntrySize
		start = (start + 7) &^ 7 // the new header is 8-byte aligned
		if n < 0 || start > len(data) {
			return nil, fmt.Errorf("%w: old-format table runs past the end", ErrInvalidLDCache)
		}
	}
	table := data[start:]
	if len(table) < newHeaderSize || !bytes.HasPrefix(table, []byte(newMagic)) {
		return nil, fmt.Errorf("%w: no %q header", ErrInvalidLDCache, newMagic)
	}
	n := int(binary.LittleEndian.Uint32(table[len(newMagic):]))
	if n < 0 || n > (len(table)-newHeaderSize)/newEntrySize {
		return nil, fmt.Errorf("%w: %d entries do not fit in the file", ErrInvalidLDCache, n)
	}
	entries := make([]LDCacheEntry, 0, n)
	for i := range n {
		e := table[newHeaderSize+i*newEntrySize:]
		flags := binary.LittleEndian.Uint32(e)
		if flags&flagTypeMask&flagELF == 0 {
			continue
		}
		// String offsets count from the start of the new header.
		name, okName := cString(table, binary.LittleEndian.Uint32(e[4:]))
		path, okPath := cString(table, binary.LittleEndian.Uint32(e[8:]))
		if !okName || !okPath {
			continue
		}
		entries = append(entries, LDCacheEntry{Name: name, Path: path, Is64: is64(flags)})
	}
	return entries, nil
}

func is64(flags uint32) bool {
	switch flags & flagArchMask {
	case flagX8664, flagAArch64, flagPPC64LE, flagRISCVLP64D:
		return true
	}
	return false
}

func cString(b []byte, off uint32) (string, bool) {
	if uint64(off) >= uint64(len(b)) {
		return "", false
	}
	s := b[off:]
	end := bytes.IndexByte(s, 0)
	if end <= 0 {
		return "", false
	}
	return string(s[:end]), true
}
