// Package hookenv is the one environment hotgpu-hook runs with, shared by
// the hook (which re-executes itself into it) and the CDI spec generator
// (which names it in the hooks it writes, so runtimes start the hook with it
// and the hook need not re-execute). Standard library only.
package hookenv

import "slices"

// Env is the whole environment hotgpu-hook runs with and gives its child
// processes. A runtime starts a hook with the environment its configuration
// names, which in some setups is the container's own (LD_PRELOAD and friends
// from the image: the CVE-2025-23266 lesson), so the hook re-executes itself
// with exactly this before doing anything. It reads no setting from the
// environment.
var Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// NeedsClean reports whether env is anything but Env.
func NeedsClean(env []string) bool { return !slices.Equal(env, Env) }
