package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

const installUsage = `install copies this hotgpu-hook binary into DIR on the host, atomically
(temp file, fsync, rename), so that container runtimes find it where the CDI
spec and hooks.d point. The DaemonSet's init container runs it: the image has
no shell or cp.

Usage:
  hotgpu-hook install --dir DIR

Flags:
`

func install(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hotgpu-hook install", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to install hotgpu-hook into (absolute)")
	if code, ok := parseCommand(fs, installUsage, args, stdout, stderr); !ok {
		return code
	}
	if !filepath.IsAbs(*dir) {
		fmt.Fprintln(stderr, "hotgpu-hook: install needs --dir with an absolute path (see 'hotgpu-hook install --help')")
		return 2
	}
	dst, err := installSelf("/proc/self/exe", *dir)
	if err != nil {
		fmt.Fprintf(stderr, "hotgpu-hook: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed %s\n", dst)
	return 0
}

// installSelf copies src to dir/hotgpu-hook through a temp file in dir, so a
// runtime starting the hook meanwhile sees the old or the new binary whole.
func installSelf(src, dir string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("failed to open own binary: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".hotgpu-hook-*")
	if err != nil {
		return "", fmt.Errorf("failed to install into %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	dst := filepath.Join(dir, "hotgpu-hook")
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return "", fmt.Errorf("failed to install %s: %w", dst, err)
	}
	return dst, nil
}
