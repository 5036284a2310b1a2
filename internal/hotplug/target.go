package hotplug

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/systemd"
)

// Target is where a running container lives on the host.
type Target struct {
	// PID is a process of the container (usually its init).
	PID int
	// Root is the container's root as seen from the host: /proc/<pid>/root.
	Root string
	// DevicesDir is the container's cgroup v1 devices directory, "" when the
	// host has no v1 devices hierarchy.
	DevicesDir string
	// UnifiedDir is the container's cgroup v2 directory, "" when the host has
	// no cgroup2 hierarchy.
	UnifiedDir string
	// Cgroup is the container's cgroup path (as in /proc/<pid>/cgroup) in
	// the hierarchy that controls its devices: v1 devices when present,
	// else cgroup2.
	Cgroup string
}

// ErrNoCgroup is returned when neither a v1 devices nor a cgroup2 hierarchy
// can be found for a container.
var ErrNoCgroup = errors.New("no devices cgroup found")

// TargetFromPID finds the cgroups and root of the container that process pid
// belongs to, from /proc/<pid>/cgroup and the host's cgroup mounts. hotgpud
// must run in the host's PID and cgroup namespaces.
func TargetFromPID(pid int) (*Target, error) {
	paths, err := readCgroupFile(pid)
	if err != nil {
		return nil, err
	}
	return targetFromPaths(pid, paths["devices"], paths[""])
}

// TargetFromCgroupsPath builds the Target of a container from the cgroups
// path its runtime was given (what NRI reports) and its pid, and checks that
// pid really is in that cgroup, which also guards against a reused pid.
//
// The cgroupfs form "/k8s.io/<id>" is a path below each hierarchy's root.
// The systemd form "slice:prefix:name" is expanded as runc's systemd driver
// does: "a-b.slice:cri-containerd:<id>" becomes
// "/a.slice/a-b.slice/cri-containerd-<id>.scope".
func TargetFromCgroupsPath(pid int, cgroupsPath string) (*Target, error) {
	rel, err := cgroupRelPath(cgroupsPath)
	if err != nil {
		return nil, err
	}
	paths, err := readCgroupFile(pid)
	if err != nil {
		return nil, err
	}
	t, err := targetFromPaths(pid, paths["devices"], paths[""])
	if err != nil {
		return nil, err
	}
	if t.Cgroup != rel {
		return nil, fmt.Errorf("pid %d is in cgroup %q, not %q: the container may have exited and its pid been reused", pid, t.Cgroup, rel)
	}
	return t, nil
}

func readCgroupFile(pid int) (map[string]string, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	paths, err := cgroups.ParseCgroupFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, fmt.Errorf("failed to read cgroups of pid %d (has the container exited?): %w", pid, err)
	}
	return paths, nil
}

// cgroupRelPath turns a runtime cgroups path into a clean absolute path
// below a hierarchy's root.
func cgroupRelPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return filepath.Clean(p), nil
	}
	parts := strings.Split(p, ":")
	if len(parts) != 3 || parts[2] == "" {
		return "", fmt.Errorf("invalid cgroups path %q: want /path (cgroupfs) or slice:prefix:name (systemd)", p)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := systemd.ExpandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("invalid cgroups path %q: %w", p, err)
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		unit = prefix + "-" + name + ".scope"
	}
	if strings.Contains(unit, "/") {
		return "", fmt.Errorf("invalid cgroups path %q: unit name contains '/'", p)
	}
	return filepath.Join(dir, unit), nil
}

func targetFromPaths(pid int, devicesPath, unifiedPath string) (*Target, error) {
	mounts, err := mountinfo.GetMounts(cgroupMountFilter)
	if err != nil {
		return nil, fmt.Errorf("failed to read cgroup mounts: %w", err)
	}
	t := &Target{PID: pid, Root: "/proc/" + strconv.Itoa(pid) + "/root"}
	if devicesPath != "" {
		t.DevicesDir = hierarchyDir(mounts, isV1Devices, devicesPath)
	}
	if unifiedPath != "" {
		t.UnifiedDir = hierarchyDir(mounts, isCgroup2, unifiedPath)
	}
	if t.DevicesDir == "" && t.UnifiedDir == "" {
		return nil, fmt.Errorf("pid %d: %w (is /sys/fs/cgroup mounted in hotgpud's mount namespace?)", pid, ErrNoCgroup)
	}
	t.Cgroup = filepath.Clean("/" + unifiedPath)
	if t.DevicesDir != "" {
		t.Cgroup = filepath.Clean("/" + devicesPath)
	}
	return t, nil
}

func cgroupMountFilter(m *mountinfo.Info) (skip, stop bool) {
	return !isV1Devices(m) && !isCgroup2(m), false
}

func isCgroup2(m *mountinfo.Info) bool { return m.FSType == "cgroup2" }

func isV1Devices(m *mountinfo.Info) bool {
	return m.FSType == "cgroup" && slices.Contains(strings.Split(m.VFSOptions, ","), "devices")
}

// hierarchyDir maps a cgroup path to a directory under a mount of that
// hierarchy whose root contains it (a mount's root is not "/" when it was
// made inside a cgroup namespace or is a bind mount of a sub-cgroup).
func hierarchyDir(mounts []*mountinfo.Info, match func(*mountinfo.Info) bool, p string) string {
	p = filepath.Clean("/" + p)
	for _, m := range mounts {
		if !match(m) {
			continue
		}
		rel, err := filepath.Rel(m.Root, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		return filepath.Join(m.Mountpoint, rel)
	}
	return ""
}

// CgroupProcs lists the processes of cgroup path (as Target.Cgroup records
// it: in the v1 devices hierarchy when the host has one, else in cgroup2);
// none when it no longer exists. It tells whether a container outlives one
// of its processes.
func CgroupProcs(path string) ([]int, error) {
	mounts, err := mountinfo.GetMounts(cgroupMountFilter)
	if err != nil {
		return nil, fmt.Errorf("failed to read cgroup mounts: %w", err)
	}
	dir := hierarchyDir(mounts, isV1Devices, path)
	if dir == "" && !slices.ContainsFunc(mounts, isV1Devices) {
		dir = hierarchyDir(mounts, isCgroup2, path)
	}
	if dir == "" {
		return nil, fmt.Errorf("cgroup %s: %w", path, ErrNoCgroup)
	}
	pids, err := cgroups.GetPids(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list processes of cgroup %s: %w", dir, err)
	}
	return pids, nil
}

// Procs lists the pids in the container's cgroup (cgroup.procs of the
// hierarchy that controls its devices).
func (t *Target) Procs() ([]int, error) {
	dir := t.DevicesDir
	if dir == "" {
		dir = t.UnifiedDir
	}
	pids, err := cgroups.GetPids(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to list processes of cgroup %s: %w", dir, err)
	}
	return pids, nil
}
