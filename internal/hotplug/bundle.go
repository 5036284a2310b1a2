package hotplug

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	devices "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ErrRulesUnknown is returned when a container's own device rules cannot be
// found. On cgroup v2 they are the base of every program hotgpu attaches, so
// guessing them would take the container's other devices away.
var ErrRulesUnknown = errors.New("the container's device rules are unknown")

const (
	maxSpecSize    = 16 << 20 // a config.json larger than this is not one
	maxAncestors   = 64       // processes between a container process and its shim
	maxBundlesRead = 4096     // sibling bundles scanned for a pod's container
)

// SpecRules returns the device rules runc built the container's program
// from: linux.resources.devices of its OCI bundle's config.json, then runc's
// defaults. The bundle is found through the runtime's shim, the nearest
// ancestor of t.PID that runs in the host's root: a containerd shim works in
// its container's bundle directory, or for a pod's containers in the pod
// sandbox's, next to theirs. A config.json counts only when its
// linux.cgroupsPath is the container's cgroup, t.Cgroup.
func SpecRules(t *Target) ([]*devices.Rule, error) {
	shim, err := runtimeAncestor(t.PID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRulesUnknown, err)
	}
	spec, err := findBundle(shim, t.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRulesUnknown, err)
	}
	var in []specs.LinuxDeviceCgroup
	if spec.Linux.Resources != nil {
		in = spec.Linux.Resources.Devices
	}
	rules, err := RulesFromSpec(in)
	if err != nil {
		return nil, err
	}
	return append(rules, defaultRulesFor(spec.Linux.Devices)...), nil
}

// runtimeAncestor walks up from pid to the first process in the host's root.
func runtimeAncestor(pid int) (int, error) {
	p := pid
	for range maxAncestors {
		pp, err := parentPID(p)
		if err != nil {
			return 0, err
		}
		if pp <= 1 {
			return 0, fmt.Errorf("no runtime process (shim) above pid %d", pid)
		}
		if hostRooted(pp) {
			return pp, nil
		}
		p = pp
	}
	return 0, fmt.Errorf("no runtime process (shim) within %d ancestors of pid %d", maxAncestors, pid)
}

// findBundle returns the spec in the shim's working directory, or in one of
// its siblings, whose cgroup is cgroup.
func findBundle(shim int, cgroup string) (*specs.Spec, error) {
	cwd, err := unix.Open("/proc/"+strconv.Itoa(shim)+"/cwd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open the working directory of the runtime's process %d: %w", shim, err)
	}
	defer unix.Close(cwd)
	spec, err := readSpec(cwd, "config.json")
	if err != nil {
		return nil, fmt.Errorf("runtime process %d does not run in an OCI bundle: %w", shim, err)
	}
	if specCgroup(spec) == cgroup {
		return spec, nil
	}
	parent, err := unix.Openat(cwd, "..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open the bundles of runtime process %d: %w", shim, err)
	}
	dir := os.NewFile(uintptr(parent), "bundles")
	defer dir.Close()
	entries, err := dir.ReadDir(maxBundlesRead)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("failed to list the bundles of runtime process %d: %w", shim, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub, err := unix.Openat(parent, e.Name(), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		spec, err := readSpec(sub, "config.json")
		unix.Close(sub)
		if err == nil && specCgroup(spec) == cgroup {
			return spec, nil
		}
	}
	return nil, fmt.Errorf("no OCI bundle next to runtime process %d's has cgroup %s", shim, cgroup)
}

// readSpec reads an OCI config.json that root owns, without following a
// symlink or blocking on a FIFO.
func readSpec(dirfd int, name string) (*specs.Spec, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Size > maxSpecSize {
		return nil, fmt.Errorf("%s is not a regular file of root's of at most %d bytes", name, maxSpecSize)
	}
	var spec specs.Spec
	if err := json.NewDecoder(io.LimitReader(f, maxSpecSize)).Decode(&spec); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", name, err)
	}
	if spec.Linux == nil {
		return nil, fmt.Errorf("%s has no linux section", name)
	}
	return &spec, nil
}

// specCgroup is the cgroup path a spec gives its container, "" if invalid.
func specCgroup(spec *specs.Spec) string {
	p, err := cgroupRelPath(spec.Linux.CgroupsPath)
	if err != nil {
		return ""
	}
	return p
}
