package driver_test

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestParseHostLDCache reads this host's own cache, written by glibc's
// ldconfig, and checks it against what ldconfig -p prints from it.
func TestParseHostLDCache(t *testing.T) {
	ldconfig, err := exec.LookPath("ldconfig")
	if err != nil {
		if ldconfig, err = exec.LookPath("/sbin/ldconfig"); err != nil {
			testenv.Skip(t, "needs glibc's ldconfig")
		}
	}
	if _, err := os.Stat(driver.LDCachePath); err != nil {
		testenv.Skipf(t, "needs %s: %v", driver.LDCachePath, err)
	}
	entries, err := driver.ReadLDCache(driver.LDCachePath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ldconfig, "-p").Output()
	if err != nil {
		t.Fatal(err)
	}
	// "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1"
	var want []string
	for _, line := range strings.Split(string(out), "\n")[1:] {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), " (")
		_, p, ok2 := strings.Cut(rest, " => ")
		if ok && ok2 {
			want = append(want, name+"="+p)
		}
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name+"="+e.Path)
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("parsed %d entries, ldconfig -p lists %d:\n%v\n%v", len(got), len(want), got, want)
	}
}

func TestParseLDCache(t *testing.T) {
	entries := []drivertest.CacheEntry{
		{Name: "libcuda.so.1", Path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", Is64: true},
		{Name: "libcuda.so.1", Path: "/usr/lib/i386-linux-gnu/libcuda.so.1"},
	}
	cache := drivertest.LDCache(entries)
	// glibc < 2.32 writes the old format first, the new one after it,
	// 8-byte aligned.
	old := append([]byte("ld.so-1.7.0\x00"), 1, 0, 0, 0) // one old entry
	old = append(old, make([]byte, 12+4)...)             // the entry, padding to 32
	for name, data := range map[string][]byte{"new": cache, "old+new": append(old, cache...)} {
		got, err := driver.ParseLDCache(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := []driver.LDCacheEntry{
			{Name: "libcuda.so.1", Path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", Is64: true},
			{Name: "libcuda.so.1", Path: "/usr/lib/i386-linux-gnu/libcuda.so.1"},
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %+v", name, got)
		}
	}
	for name, data := range map[string][]byte{
		"empty":        nil,
		"not a cache":  []byte("#!/bin/sh\n"),
		"truncated":    cache[:30],
		"too many":     append(cache[:20:20], 0xff, 0xff, 0xff, 0x0f),
		"old only":     old[:12],
		"old too long": append([]byte("ld.so-1.7.0\x00"), 0xff, 0xff, 0xff, 0xff),
	} {
		if got, err := driver.ParseLDCache(data); !errors.Is(err, driver.ErrInvalidLDCache) {
			t.Errorf("%s: %v, %v; want ErrInvalidLDCache", name, got, err)
		}
	}
	// A string offset past the end skips that entry only.
	bad := slices.Clone(cache)
	bad[48+4] = 0xff
	if got, err := driver.ParseLDCache(bad); err != nil || len(got) != 1 {
		t.Errorf("damaged entry: %v, %v; want the other one", got, err)
	}
}

func FuzzParseLDCache(f *testing.F) {
	f.Add(drivertest.LDCache([]drivertest.CacheEntry{{Name: "libcuda.so.1", Path: "/x", Is64: true}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := driver.ParseLDCache(data)
		if err != nil && entries != nil {
			t.Fatal("entries with an error")
		}
		for _, e := range entries {
			if e.Name == "" || e.Path == "" {
				t.Fatalf("empty entry %+v", e)
			}
		}
	})
}
