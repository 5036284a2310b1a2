package hotplug

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// V1 is device access through a cgroup v1 devices directory: one
// "c MAJ:MIN rwm" line per node to devices.allow or devices.deny.
type V1 struct {
	dir string
}

var _ DeviceAccess = (*V1)(nil)

// NewV1 returns the device access of the cgroup v1 devices directory dir.
func NewV1(dir string) *V1 { return &V1{dir: dir} }

// Grant writes one devices.allow line per node, never a wildcard. Nodes the
// cgroup already allows are left alone; if a write fails, the lines this call
// wrote are denied again.
func (v *V1) Grant(nodes []gpu.DeviceNode) error {
	l, err := v.list()
	if err != nil {
		return err
	}
	return v.apply(l, nodes, "devices.allow", "devices.deny", func(present bool) bool { return !present })
}

// Revoke writes one devices.deny line per node. An unconfined cgroup
// ("a *:* rwm", e.g. a privileged container) is left alone: denying there
// would take away a device hotgpu never granted. If a write fails, the lines
// this call denied are allowed again.
func (v *V1) Revoke(nodes []gpu.DeviceNode) error {
	l, err := v.list()
	if err != nil {
		return err
	}
	if l.unconfined() {
		return nil
	}
	if err := v.apply(l, nodes, "devices.deny", "devices.allow", func(present bool) bool { return present }); err != nil {
		return err
	}
	// A deny line only removes the identical allow line: a wildcard such as
	// "c 195:* rwm" from the container's spec still lets the node through.
	after, err := v.list()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if after.allows(n) {
			v.undo(slices.DeleteFunc(slices.Clone(nodes), func(n gpu.DeviceNode) bool { return !l.allows(n) }), "devices.allow")
			return fmt.Errorf("failed to revoke %s in %s: a wider rule of the container still allows it; it must be restarted without that rule", n.Rule(), v.dir)
		}
	}
	return nil
}

// apply writes file for each node that needs it, judged by l (the cgroup's
// devices.list), and undoes those writes through undoFile when one fails.
func (v *V1) apply(l deviceList, nodes []gpu.DeviceNode, file, undoFile string, needs func(present bool) bool) error {
	var done []gpu.DeviceNode
	for _, n := range nodes {
		if err := checkNode(n); err != nil {
			v.undo(done, undoFile)
			return err
		}
		if !needs(l.allows(n)) {
			continue
		}
		if err := cgroups.WriteFile(v.dir, file, n.Rule()); err != nil {
			v.undo(done, undoFile)
			return fmt.Errorf("failed to write %q to %s/%s: %w", n.Rule(), v.dir, file, err)
		}
		done = append(done, n)
	}
	return nil
}

func (v *V1) undo(done []gpu.DeviceNode, file string) {
	for _, n := range done {
		_ = cgroups.WriteFile(v.dir, file, n.Rule())
	}
}

// Has reports whether devices.list lets the container read and write node.
func (v *V1) Has(node gpu.DeviceNode) (bool, error) {
	l, err := v.list()
	if err != nil {
		return false, err
	}
	return l.allows(node), nil
}

// Unconfined reports whether the cgroup allows every device (a privileged
// container): there is no GPU to take back that hotgpu gave.
func (v *V1) Unconfined() (bool, error) {
	l, err := v.list()
	if err != nil {
		return false, err
	}
	return l.unconfined(), nil
}

func (v *V1) list() (deviceList, error) {
	s, err := cgroups.ReadFile(v.dir, "devices.list")
	if err != nil {
		return nil, fmt.Errorf("failed to read %s/devices.list (has the container exited?): %w", v.dir, err)
	}
	return parseDeviceList(s)
}

// listEntry is one line of devices.list; -1 is "*".
type listEntry struct {
	typ          byte
	major, minor int64
	perms        string
}

type deviceList []listEntry

// parseDeviceList parses devices.list, which the kernel prints as
// "<a|b|c> <major|*>:<minor|*> <rwm>" lines.
func parseDeviceList(s string) (deviceList, error) {
	var l deviceList
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		mm := strings.SplitN(f[1%len(f)], ":", 2)
		if len(f) != 3 || len(f[0]) != 1 || len(mm) != 2 {
			return nil, fmt.Errorf("failed to parse devices.list line %q", sc.Text())
		}
		major, err1 := parseDevNum(mm[0])
		minor, err2 := parseDevNum(mm[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("failed to parse devices.list line %q", sc.Text())
		}
		l = append(l, listEntry{typ: f[0][0], major: major, minor: minor, perms: f[2]})
	}
	return l, sc.Err()
}

func parseDevNum(s string) (int64, error) {
	if s == "*" {
		return -1, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// unconfined is the kernel's way of printing a cgroup in deny-list mode
// (default allow): a single "a *:* rwm" line.
func (l deviceList) unconfined() bool {
	for _, e := range l {
		if e.typ == 'a' && strings.Contains(e.perms, "r") && strings.Contains(e.perms, "w") {
			return true
		}
	}
	return false
}

func (l deviceList) allows(n gpu.DeviceNode) bool {
	for _, e := range l {
		if e.typ != 'a' && e.typ != 'c' {
			continue
		}
		if (e.major == -1 || e.major == n.Major) && (e.minor == -1 || e.minor == n.Minor) &&
			strings.Contains(e.perms, "r") && strings.Contains(e.perms, "w") {
			return true
		}
	}
	return false
}
