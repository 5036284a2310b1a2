package attach

import (
	"errors"
	"slices"
	"sync"
	"testing"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// units stands in for systemd: it keeps each unit's device list as it was
// last set, and fails the calls it is told to.
type units struct {
	mu    sync.Mutex
	lists map[string][]*devices.Rule
	sets  int
	// failSet fails the nth SetDevices call (1-based); 0 never.
	failSet int
}

func newUnits() *units { return &units{lists: map[string][]*devices.Rule{}} }

func (u *units) SetDevices(unit string, rules []*devices.Rule) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sets++
	if u.sets == u.failSet {
		return errors.New("injected D-Bus failure")
	}
	u.lists[unit] = slices.Clone(rules)
	return nil
}

func (u *units) Allows(unit string, major, minor int64) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return specAllows(u.lists[unit], gpuNode(major, minor)), nil
}

// rules lists unit's rules as cgroup strings.
func (u *units) rules(unit string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, r := range u.lists[unit] {
		out = append(out, r.CgroupString())
	}
	return out
}

const testUnit = "cri-containerd-c0ffee1234567890.scope"

func withUnits(m *Manager, s *sandbox) *units {
	u := newUnits()
	m.SetUnits(u, func(cgroup string) string {
		if cgroup == s.cgroup {
			return testUnit
		}
		return ""
	})
	return u
}

// A container in a systemd scope: attach adds the GPU to the unit's list
// next to the container's own rules, detach writes the list without it, so
// a daemon-reload re-applies exactly what the container holds.
func TestSystemdUnitFollowsAttachAndDetach(t *testing.T) {
	s := newSandbox(t)
	m, _ := newManager(t, s, t.TempDir())
	u := withUnits(m, s)
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"1"}, 0)
	must(t, err)
	got := u.rules(testUnit)
	for _, want := range []string{"c 195:1 rwm", "c 195:255 rwm", "c 1:3 rwm"} {
		if !slices.Contains(got, want) {
			t.Errorf("unit list after attach %v lacks %q", got, want)
		}
	}
	if s.open("/dev/nvidia1") != "ENXIO" {
		t.Fatal("GPU not granted in the cgroup")
	}
	_, err = m.Detach(Target{ContainerID: "c0ffee1234567890"}, nil, false)
	must(t, err)
	got = u.rules(testUnit)
	if slices.Contains(got, "c 195:1 rwm") || slices.Contains(got, "c 195:255 rwm") || !slices.Contains(got, "c 1:3 rwm") {
		t.Errorf("unit list after detach %v: want the container's own rules without the GPU", got)
	}
}

// A D-Bus failure fails the operation and leaves cgroup, unit and ledger as
// they were.
func TestSystemdUnitFailureRollsBack(t *testing.T) {
	s := newSandbox(t)
	m, l := newManager(t, s, t.TempDir())
	u := withUnits(m, s)
	before := s.devicesList()
	u.failSet = 1
	if _, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0); err == nil {
		t.Fatal("attach succeeded although systemd refused")
	}
	if after := s.devicesList(); after != before || len(l.Grants()) != 0 || len(u.rules(testUnit)) != 0 {
		t.Fatalf("after a failed attach: devices.list %q -> %q, grants %v, unit %v", before, after, l.Grants(), u.rules(testUnit))
	}
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"2"}, 0)
	must(t, err)
	attached := u.rules(testUnit)
	u.failSet = u.sets + 1
	if _, err := m.Detach(Target{ContainerID: "c0ffee1234567890"}, nil, false); err == nil {
		t.Fatal("detach succeeded although systemd refused")
	}
	if got := s.open("/dev/nvidia2"); got != "ENXIO" || len(l.Grants()) != 1 || !slices.Equal(u.rules(testUnit), attached) {
		t.Fatalf("after a failed detach: open = %s, grants %v, unit %v", got, l.Grants(), u.rules(testUnit))
	}
}

// Reconcile repairs the unit in both directions: a grant its list lost is
// written back, a GPU it lists that the container does not hold is taken
// out. Each repair is counted.
func TestSystemdUnitReconcile(t *testing.T) {
	s := newSandbox(t)
	m, _ := newManager(t, s, t.TempDir())
	u := withUnits(m, s)
	_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"0"}, 0)
	must(t, err)
	// Someone resets the unit's list to the container's spec.
	must(t, u.SetDevices(testUnit, []*devices.Rule{{Type: devices.CharDevice, Major: 1, Minor: 3, Permissions: "rwm", Allow: true}}))
	n, err := m.Reconcile("")
	must(t, err)
	if n == 0 || !slices.Contains(u.rules(testUnit), "c 195:0 rwm") {
		t.Fatalf("reconcile re-applied %d, unit %v", n, u.rules(testUnit))
	}
	_, err = m.Detach(Target{ContainerID: "c0ffee1234567890"}, nil, false)
	must(t, err)
	// Someone grants GPU 3 in the unit after the detach.
	must(t, u.SetDevices(testUnit, append(u.lists[testUnit], &devices.Rule{Type: devices.CharDevice, Major: 195, Minor: 3, Permissions: "rwm", Allow: true})))
	revoked, err := m.RevokeStrays("")
	must(t, err)
	if revoked != 1 || slices.Contains(u.rules(testUnit), "c 195:3 rwm") || !slices.Contains(u.rules(testUnit), "c 1:3 rwm") {
		t.Fatalf("revoked %d, unit %v", revoked, u.rules(testUnit))
	}
}

// A crash at any step leaves the unit's list as the recovery finds it
// right: without the GPU of the interrupted attach, or with the GPU of the
// interrupted detach taken out.
func TestSystemdUnitRecoverAfterCrash(t *testing.T) {
	for _, step := range []string{"granted", "revoked", "removed"} {
		t.Run(step, func(t *testing.T) {
			s := newSandbox(t)
			state := t.TempDir()
			m, _ := newManager(t, s, state)
			u := withUnits(m, s)
			detach := step == "revoked" || step == "removed"
			if detach {
				_, err := m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, 0)
				must(t, err)
			}
			m.SetFailpoint(func(at string) error {
				if at == step {
					panic("crash")
				}
				return nil
			})
			func() {
				defer func() { _ = recover() }()
				if detach {
					_, _ = m.Detach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, false)
				} else {
					_, _ = m.Attach(Target{ContainerID: "c0ffee1234567890"}, []string{"3"}, 0)
				}
			}()
			if !slices.Contains(u.rules(testUnit), "c 195:3 rwm") && !detach {
				t.Fatalf("setup: unit %v lacks the GPU granted before the crash", u.rules(testUnit))
			}
			restarted, _ := newManager(t, s, state)
			restarted.SetUnits(u, m.unitOf)
			_, err := restarted.Recover()
			must(t, err)
			if got := u.rules(testUnit); slices.Contains(got, "c 195:3 rwm") || slices.Contains(got, "c 195:255 rwm") {
				t.Fatalf("unit after recover: %v", got)
			}
		})
	}
}

func gpuNode(major, minor int64) gpu.DeviceNode { return gpu.DeviceNode{Major: major, Minor: minor} }
