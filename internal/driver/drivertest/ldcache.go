package drivertest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// CacheEntry is one line of a linker cache: Name => Path.
type CacheEntry struct {
	Name, Path string
	Is64       bool
}

// Flags of glibc's dl-cache.h: an ELF libc6 library, x86-64 or i386.
const (
	flagLibc6X8664 = 0x0303
	flagLibc6I386  = 0x0003
)

// LDCache encodes entries as a glibc >= 2.32 ld.so.cache
// ("glibc-ld.so.cache1.1" alone, little-endian), the format
// driver.ParseLDCache reads and ldconfig writes.
func LDCache(entries []CacheEntry) []byte {
	const headerSize, entrySize = 48, 24
	var strs bytes.Buffer
	stringsAt := uint32(headerSize + entrySize*len(entries))
	offset := func(s string) uint32 {
		off := stringsAt + uint32(strs.Len())
		strs.WriteString(s)
		strs.WriteByte(0)
		return off
	}
	type entry struct {
		Flags      int32
		Key, Value uint32
		OSVersion  uint32
		HWCap      uint64
	}
	table := make([]entry, len(entries))
	for i, e := range entries {
		flags := int32(flagLibc6I386)
		if e.Is64 {
			flags = flagLibc6X8664
		}
		table[i] = entry{Flags: flags, Key: offset(e.Name), Value: offset(e.Path)}
	}
	var b bytes.Buffer
	b.WriteString("glibc-ld.so.cache1.1")
	write(&b, uint32(len(entries)))
	write(&b, uint32(strs.Len()))
	b.Write([]byte{2, 0, 0, 0}) // flags: little-endian; padding
	write(&b, [4]uint32{})      // extension offset (none); unused
	write(&b, table)
	b.Write(strs.Bytes())
	return b.Bytes()
}

// FileSeen is a file's device, inode and content hash, or "none" when it
// does not exist: two calls agree only if it is the very same file, byte for
// byte (tests prove with it that a container's own /etc/ld.so.cache is left
// as it was under the linker cache hotgpu mounts over it).
func FileSeen(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "none"
	}
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("dev %d inode %d sha256 %x", st.Dev, st.Ino, sha256.Sum256(data))
}
