// Command hotgpu-hook is the OCI hook hotgpu's CDI spec asks container
// runtimes to run. It is a thin command line over package hooks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hotgpu/hotgpu/hooks"

	"github.com/hotgpu/hotgpu/internal/hookenv"
)

const usage = `hotgpu-hook runs inside a container runtime as an OCI hook, reading the
container's state (JSON) on stdin. You do not normally run it by hand: the CDI
spec written by 'hotgpu cdi generate' references it.

Usage:
  hotgpu-hook create-symlinks --link TARGET::LINK [--link TARGET::LINK...]
  hotgpu-hook update-ldcache --folder DIR [--folder DIR...]
  hotgpu-hook prestart [--api-socket PATH] [--allow-all] [--standalone]
  hotgpu-hook install --dir DIR

Commands:
  create-symlinks make the driver libraries' SONAME links in the container
  update-ldcache  add the driver library folders to the container's linker cache
  prestart        give GPUs to containers of runtimes without NRI (Docker,
                  podman, CRI-O hooks.d); run at prestart/createRuntime and poststop;
                  fails when hotgpud does not answer unless --standalone
  install         copy this binary into DIR on the host (the DaemonSet's init container)

hotgpu-hook always runs with a fixed minimal environment: if started with any
other, it re-executes itself with PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.
`

const ldcacheUsage = `update-ldcache is a createContainer hook. It finds the container's root from
the bundle's config.json, writes /etc/ld.so.conf.d/00-hotgpu.conf inside it
listing each --folder (paths inside the container), then runs the host's
ldconfig -r <root> so programs find the NVIDIA driver libraries mounted there.
Paths are resolved inside the container root: its symlinks cannot redirect
the write to the host, and a conf path that is not a regular file (a FIFO or
device in the image) is refused, never opened. ldconfig runs with a minimal
fixed environment and is stopped at --timeout.

Usage:
  hotgpu-hook update-ldcache --folder DIR [--folder DIR...] [--ldconfig PATH] [--timeout D]

Example (as a CDI spec hook):
  hooks:
    - hookName: createContainer
      path: /usr/local/bin/hotgpu-hook
      args: [hotgpu-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
      timeout: 10

Flags:
`

const symlinksUsage = `create-symlinks is a createContainer hook. It finds the container's root from
the bundle's config.json and creates each LINK (an absolute path inside the
container) as a symbolic link to TARGET, such as the SONAME link
libcuda.so.1 -> libcuda.so.580.95.05 beside a mounted driver library, or
libcuda.so -> libcuda.so.1 for programs linked with -lcuda. Directories are
resolved inside the container root: its symlinks cannot send a link to the
host. A path that already exists is left as it is.

Usage:
  hotgpu-hook create-symlinks --link TARGET::LINK [--link TARGET::LINK...]

Example (as a CDI spec hook):
  hooks:
    - hookName: createContainer
      path: /usr/local/bin/hotgpu-hook
      args: [hotgpu-hook, create-symlinks, --link, libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so]

Flags:
`

func main() {
	if hookenv.NeedsClean(os.Environ()) {
		// Never run with an environment the container may have chosen.
		err := syscall.Exec("/proc/self/exe", os.Args, hookenv.Env)
		fmt.Fprintf(os.Stderr, "hotgpu-hook: failed to re-execute with a clean environment: %v\n", err)
		os.Exit(1)
	}
	// The runtime may start a hook inside the bundle, next to the
	// container's root filesystem; nothing here uses relative paths.
	_ = os.Chdir("/")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code: 0 ok, 1 failure,
// 2 usage error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "create-symlinks":
		return createSymlinks(ctx, args[1:], stdin, stdout, stderr)
	case "update-ldcache":
		return updateLDCache(ctx, args[1:], stdin, stdout, stderr)
	case "prestart":
		return prestart(ctx, args[1:], stdin, stdout, stderr)
	case "install":
		return install(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "hotgpu-hook: unknown command %q (see 'hotgpu-hook --help')\n", args[0])
	return 2
}

func createSymlinks(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var s hooks.Symlinks
	fs := flag.NewFlagSet("hotgpu-hook create-symlinks", flag.ContinueOnError)
	fs.Func("link", "`TARGET::LINK` to create, LINK an absolute path inside the container (repeat for several)", func(v string) error {
		s.Links = append(s.Links, v)
		return nil
	})
	if code, ok := parseCommand(fs, symlinksUsage, args, stdout, stderr); !ok {
		return code
	}
	if err := s.Run(ctx, stdin); err != nil {
		fmt.Fprintf(stderr, "hotgpu-hook: %v\n", err)
		return 1
	}
	return 0
}

func updateLDCache(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var l hooks.LDCache
	fs := flag.NewFlagSet("hotgpu-hook update-ldcache", flag.ContinueOnError)
	fs.Func("folder", "library `directory` inside the container (repeat for several)", func(v string) error {
		l.Folders = append(l.Folders, v)
		return nil
	})
	fs.StringVar(&l.LDConfig, "ldconfig", "", "host ldconfig to run (default: /sbin/ldconfig or /usr/sbin/ldconfig, skipped if neither exists)")
	fs.DurationVar(&l.Timeout, "timeout", hooks.DefaultLDCacheTimeout, "give up after this long (below the CDI spec's hook timeout, 10 s)")
	if code, ok := parseCommand(fs, ldcacheUsage, args, stdout, stderr); !ok {
		return code
	}
	if err := l.Run(ctx, stdin); err != nil {
		fmt.Fprintf(stderr, "hotgpu-hook: %v\n", err)
		return 1
	}
	return 0
}

// parseCommand parses a subcommand's flags. --help prints its usage and
// flags (exit 0); a mistake is reported once (exit 2). ok means go on.
func parseCommand(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0, false
	case err != nil:
		fmt.Fprintf(stderr, "hotgpu-hook: %v (see '%s --help')\n", err, fs.Name())
		return 2, false
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "hotgpu-hook: unexpected argument %q (see '%s --help')\n", fs.Arg(0), fs.Name())
		return 2, false
	}
	return 0, true
}
