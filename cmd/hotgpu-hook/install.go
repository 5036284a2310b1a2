package main

import (
	"context"
	"errors"
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
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "directory to install hotgpu-hook into (absolute)")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, installUsage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "hotgpu-hook: %v (see 'hotgpu-hook install --help')\n", err)
		return 2
	case !filepath.IsAbs(*dir) || fs.NArg() > 0:
		fmt.Fprintln(stderr, "hotgpu-hook: install needs --dir with an absolute path and nothing else (see 'hotgpu-hook install --help')")
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
