package hotplug

import (
	"fmt"
	"slices"
	"sync"

	"github.com/opencontainers/cgroups"
	// The devices package registers cgroups.DevicesSetV2, which builds the
	// eBPF allow-list program and swaps it in with BPF_F_REPLACE.
	_ "github.com/opencontainers/cgroups/devices"
	devices "github.com/opencontainers/cgroups/devices/config"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// V2 is device access through a cgroup v2 eBPF program. Another program
// next to runc's would only narrow access (every program must allow), so
// every change builds one complete program from the base rules and all
// granted nodes and atomically replaces the one attached.
//
// One V2 must be used per container: it remembers the granted nodes and the
// program it attached.
type V2 struct {
	dir  string
	base []*devices.Rule

	mu      sync.Mutex
	granted []gpu.DeviceNode // by (major, minor), no duplicates
	prog    uint32           // id of the program attached last, 0 if none
}

var _ DeviceAccess = (*V2)(nil)

// NewV2 returns the device access of cgroup2 directory dir. base is the
// container's own rules, granted the nodes already granted to it before.
func NewV2(dir string, base []*devices.Rule, granted []gpu.DeviceNode) (*V2, error) {
	v := &V2{dir: dir, base: slices.Clone(base)}
	for _, n := range granted {
		if err := checkNode(n); err != nil {
			return nil, err
		}
		v.granted = addNode(v.granted, n)
	}
	return v, nil
}

// Grant replaces the container's program with one that also allows nodes.
func (v *V2) Grant(nodes []gpu.DeviceNode) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	next := slices.Clone(v.granted)
	for _, n := range nodes {
		if err := checkNode(n); err != nil {
			return err
		}
		next = addNode(next, n)
	}
	return v.replace(next)
}

// Revoke replaces the container's program with one without nodes. As with
// cgroup v1, a wider rule of the container's own (such as "c 195:* rwm" or
// "a *:* rwm") that would still let a node through is an error, and then
// nothing changes: the program would not take the node away.
func (v *V2) Revoke(nodes []gpu.DeviceNode) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range nodes {
		if r := widerRule(v.base, n); r != nil {
			return fmt.Errorf("failed to revoke %s in %s: the container's own rule %q still allows it; it must be restarted without that rule", n.Rule(), v.dir, r.CgroupString())
		}
	}
	next := slices.DeleteFunc(slices.Clone(v.granted), func(g gpu.DeviceNode) bool {
		return slices.ContainsFunc(nodes, func(n gpu.DeviceNode) bool { return sameDev(g, n) })
	})
	return v.replace(next)
}

// Has reports whether the attached program is the one this V2 built last and
// it allows node. After a runtime replaced the program, or after a restart,
// it reports false until the next Grant. A cgroup without any program is
// unconfined and allows everything.
func (v *V2) Has(node gpu.DeviceNode) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ids, err := v.programs()
	if err != nil {
		return false, err
	}
	if len(ids) == 0 {
		return true, nil
	}
	ours := len(ids) == 1 && ids[0] == v.prog
	return ours && slices.ContainsFunc(v.granted, func(g gpu.DeviceNode) bool { return sameDev(g, node) }), nil
}

// replace swaps in the program for base + next. The kernel swaps it in one
// step (BPF_F_REPLACE), so on error the old program is still attached.
func (v *V2) replace(next []gpu.DeviceNode) error {
	before, err := v.programs()
	if err != nil {
		return err
	}
	if len(before) == 0 {
		// No program: the container is unconfined (privileged, or not made
		// by runc). Attaching one would take devices away from it.
		v.granted, v.prog = next, 0
		return nil
	}
	if len(before) == 1 && before[0] == v.prog && slices.Equal(next, v.granted) {
		return nil
	}
	rules := slices.Clip(v.base)
	for _, n := range next {
		r, err := nodeRule(n)
		if err != nil {
			return err
		}
		rules = append(rules, r)
	}
	if err := cgroups.DevicesSetV2(v.dir, &cgroups.Resources{Devices: rules}); err != nil {
		return fmt.Errorf("failed to replace device program of %s: %w", v.dir, err)
	}
	after, err := v.programs()
	if err != nil {
		return err
	}
	// DevicesSetV2 hides load errors when every rule allows rwm; an
	// unchanged program id is how such a failure shows.
	if len(after) != 1 || (len(before) == 1 && after[0] == before[0]) {
		return fmt.Errorf("failed to replace device program of %s: programs %v before, %v after", v.dir, before, after)
	}
	v.granted, v.prog = next, after[0]
	return nil
}

func (v *V2) programs() ([]uint32, error) {
	fd, err := openCgroupDir(v.dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return devicePrograms(fd)
}

func sameDev(a, b gpu.DeviceNode) bool { return a.Major == b.Major && a.Minor == b.Minor }

// addNode inserts n keeping l sorted by device number and free of duplicates,
// so that equal sets compare equal.
func addNode(l []gpu.DeviceNode, n gpu.DeviceNode) []gpu.DeviceNode {
	i, found := slices.BinarySearchFunc(l, n, func(a, b gpu.DeviceNode) int {
		if a.Major != b.Major {
			return int(a.Major - b.Major)
		}
		return int(a.Minor - b.Minor)
	})
	if found {
		return l
	}
	return slices.Insert(l, i, n)
}
