package hotplug

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// v2Cgroup makes a cgroup2 directory with runc's default program attached,
// as runc does for a container, and moves a helper process into it.
func v2Cgroup(t *testing.T) (string, *child) {
	t.Helper()
	requireRoot(t)
	self := ownTarget(t)
	if self.UnifiedDir == "" {
		testenv.Skip(t, "no cgroup2 hierarchy on this host")
	}
	dir := newCgroup(t, self.UnifiedDir)
	if err := cgroups.DevicesSetV2(dir, &cgroups.Resources{Devices: DefaultRules()}); err != nil {
		testenv.Skipf(t, "cannot attach a BPF_CGROUP_DEVICE program here: %v", err)
	}
	c := startChild(t)
	writeCgroup(t, dir, "cgroup.procs", strconv.Itoa(c.pid))
	return dir, c
}

func progIDs(t *testing.T, dir string) []uint32 {
	t.Helper()
	fd, err := openCgroupDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFd(fd)
	ids, err := devicePrograms(fd)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// expectReplaced checks that exactly one program is attached and that it is
// not the one attached before.
func expectReplaced(t *testing.T, dir string, before []uint32) []uint32 {
	t.Helper()
	after := progIDs(t, dir)
	if len(after) != 1 || slices.Equal(after, before) {
		t.Errorf("device programs before %v, after %v: want one new program replacing the old", before, after)
	}
	return after
}

func TestV2GrantRevoke(t *testing.T) {
	dir, c := v2Cgroup(t)
	tmp := t.TempDir()
	path7, n7 := hostNode(t, tmp, gpu.NvidiaMajor, 7)
	path8, n8 := hostNode(t, tmp, gpu.NvidiaMajor, 8)

	c.expectOpen(t, path7, "EPERM")
	c.expectOpen(t, "/dev/null", "ok")
	ids := progIDs(t, dir)
	if len(ids) != 1 {
		t.Fatalf("runc-like setup attached %v, want one program", ids)
	}

	acc, err := NewV2(dir, DefaultRules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	expectHas(t, acc, n7, false)
	steps := []struct {
		name          string
		grant, revoke []gpu.DeviceNode
		open7, open8  string
		has7, has8    bool
	}{
		{name: "grant 7", grant: []gpu.DeviceNode{n7}, open7: "ENXIO", open8: "EPERM", has7: true},
		{name: "grant 8", grant: []gpu.DeviceNode{n8}, open7: "ENXIO", open8: "ENXIO", has7: true, has8: true},
		{name: "revoke 7", revoke: []gpu.DeviceNode{n7}, open7: "EPERM", open8: "ENXIO", has8: true},
		{name: "revoke 8", revoke: []gpu.DeviceNode{n8}, open7: "EPERM", open8: "EPERM"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var err error
			if s.grant != nil {
				err = acc.Grant(s.grant)
			} else {
				err = acc.Revoke(s.revoke)
			}
			if err != nil {
				t.Fatal(err)
			}
			ids = expectReplaced(t, dir, ids)
			c.expectOpen(t, path7, s.open7)
			c.expectOpen(t, path8, s.open8)
			c.expectOpen(t, "/dev/null", "ok") // base rules survive the replace
			c.expectOpen(t, "/dev/zero", "ok")
			expectHas(t, acc, n7, s.has7)
			expectHas(t, acc, n8, s.has8)
		})
	}
}

// When a runtime puts its own program back (e.g. runc update), Has notices
// and a reconciling Grant restores the grant, still as one program.
func TestV2ReconcileAfterReset(t *testing.T) {
	dir, c := v2Cgroup(t)
	path, node := hostNode(t, t.TempDir(), gpu.NvidiaMajor, 9)
	acc, err := NewV2(dir, DefaultRules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
		t.Fatal(err)
	}
	ids := progIDs(t, dir)
	if err := cgroups.DevicesSetV2(dir, &cgroups.Resources{Devices: DefaultRules()}); err != nil {
		t.Fatal(err)
	}
	ids = expectReplaced(t, dir, ids)
	c.expectOpen(t, path, "EPERM")
	expectHas(t, acc, node, false)

	if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
		t.Fatal(err)
	}
	expectReplaced(t, dir, ids)
	c.expectOpen(t, path, "ENXIO")
	expectHas(t, acc, node, true)

	// A second Grant of the same node is a no-op: no new program.
	ids = progIDs(t, dir)
	if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
		t.Fatal(err)
	}
	if got := progIDs(t, dir); !slices.Equal(got, ids) {
		t.Errorf("idempotent Grant replaced the program: %v -> %v", ids, got)
	}
}

// A cgroup with no program is unconfined; Grant must not attach one, which
// would take every other device away from the container.
func TestV2Unconfined(t *testing.T) {
	requireRoot(t)
	self := ownTarget(t)
	if self.UnifiedDir == "" {
		testenv.Skip(t, "no cgroup2 hierarchy on this host")
	}
	dir := newCgroup(t, self.UnifiedDir)
	node := gpu.DeviceNode{Path: "/dev/nvidia0", Major: gpu.NvidiaMajor, Minor: 0}
	acc, err := NewV2(dir, DefaultRules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
		t.Fatal(err)
	}
	if ids := progIDs(t, dir); len(ids) != 0 {
		t.Errorf("Grant attached %v to an unconfined cgroup", ids)
	}
	expectHas(t, acc, node, true)
}

func TestNewV2RejectsWildcard(t *testing.T) {
	if _, err := NewV2("/nonexistent", nil, []gpu.DeviceNode{{Major: 195, Minor: -1}}); err == nil {
		t.Error("NewV2 accepted a wildcard minor")
	}
}

// The kernel swaps the program in one step (BPF_F_REPLACE): a poller never
// sees two programs stacked, or none, while grants and revokes run.
func TestV2ReplaceIsAtomic(t *testing.T) {
	dir, c := v2Cgroup(t)
	node := gpu.DeviceNode{Path: "/dev/nvidia5", Major: gpu.NvidiaMajor, Minor: 5}
	acc, err := NewV2(dir, DefaultRules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := openCgroupDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFd(fd)
	stop := make(chan struct{})
	done := make(chan []int)
	go func() {
		var bad []int
		for polls := 0; ; polls++ {
			select {
			case <-stop:
				done <- append(bad, polls)
				return
			default:
			}
			if ids, err := devicePrograms(fd); err != nil || len(ids) != 1 {
				bad = append(bad, len(ids))
			}
		}
	}()
	for range 200 {
		if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
			t.Fatal(err)
		}
		if err := acc.Revoke([]gpu.DeviceNode{node}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	res := <-done
	bad, polls := res[:len(res)-1], res[len(res)-1]
	if len(bad) > 0 {
		t.Errorf("%d of %d polls saw program counts %v, want always 1", len(bad), polls, bad)
	}
	t.Logf("400 replaces, %d polls, all saw exactly one program", polls)
	c.expectOpen(t, "/dev/null", "ok")
}

// A revoke that a wider rule of the container's own would defeat is an error
// and changes nothing, as on cgroup v1: the program it would attach still
// lets the node through.
func TestV2RevokeRefusedByWiderRule(t *testing.T) {
	major := int64(gpu.NvidiaMajor)
	for _, tc := range []struct {
		name string
		rule specs.LinuxDeviceCgroup
	}{
		{name: "all minors of the GPU major", rule: specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Access: "rwm"}},
		{name: "every device", rule: specs.LinuxDeviceCgroup{Allow: true, Type: "a", Access: "rwm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, c := v2Cgroup(t)
			path, node := hostNode(t, t.TempDir(), gpu.NvidiaMajor, 7)
			own, err := RulesFromSpec([]specs.LinuxDeviceCgroup{tc.rule})
			if err != nil {
				t.Fatal(err)
			}
			acc, err := NewV2(dir, append(DefaultRules(), own...), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
				t.Fatal(err)
			}
			ids := progIDs(t, dir)
			err = acc.Revoke([]gpu.DeviceNode{node})
			if err == nil || !strings.Contains(err.Error(), "still allows it") {
				t.Fatalf("Revoke under a wider rule = %v, want an error naming the rule", err)
			}
			if got := progIDs(t, dir); !slices.Equal(got, ids) {
				t.Errorf("a refused revoke replaced the program: %v -> %v", ids, got)
			}
			c.expectOpen(t, path, "ENXIO")
			expectHas(t, acc, node, true)
		})
	}
}

func TestWiderRule(t *testing.T) {
	n := gpu.DeviceNode{Path: "/dev/nvidia1", Major: 195, Minor: 1}
	c := func(major, minor int64, perms string, allow bool) *devices.Rule {
		return &devices.Rule{Type: devices.CharDevice, Major: major, Minor: minor, Permissions: devices.Permissions(perms), Allow: allow}
	}
	a := func(allow bool) *devices.Rule {
		return &devices.Rule{Type: devices.WildcardDevice, Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: "rwm", Allow: allow}
	}
	for _, tc := range []struct {
		name  string
		rules []*devices.Rule
		wider bool
		exact bool // allowed by the rule for exactly the node
	}{
		{name: "runc defaults", rules: DefaultRules()},
		{name: "exact rule only", rules: []*devices.Rule{a(false), c(195, 1, "rwm", true)}, exact: true},
		{name: "exact rule denied again", rules: []*devices.Rule{c(195, 1, "rwm", true), c(195, 1, "rw", false)}},
		{name: "other minor", rules: []*devices.Rule{a(false), c(195, 2, "rwm", true)}},
		{name: "all minors", rules: []*devices.Rule{a(false), c(195, devices.Wildcard, "rw", true)}, wider: true},
		{name: "all majors", rules: []*devices.Rule{c(devices.Wildcard, 1, "r", true)}, wider: true},
		{name: "mknod only", rules: []*devices.Rule{c(devices.Wildcard, devices.Wildcard, "m", true)}},
		{name: "allow all", rules: []*devices.Rule{a(true)}, wider: true},
		{name: "allow all then deny the major", rules: []*devices.Rule{a(true), c(195, devices.Wildcard, "rwm", false)}},
		{name: "allow all then deny reads", rules: []*devices.Rule{a(true), c(195, devices.Wildcard, "r", false)}, wider: true},
		{name: "wildcard removed again", rules: []*devices.Rule{c(195, devices.Wildcard, "rwm", true), c(195, devices.Wildcard, "rwm", false)}},
		{name: "deny all after", rules: []*devices.Rule{c(195, devices.Wildcard, "rwm", true), a(false)}},
		{name: "block device", rules: []*devices.Rule{{Type: devices.BlockDevice, Major: 195, Minor: devices.Wildcard, Permissions: "rwm", Allow: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := widerRule(tc.rules, n); (got != nil) != tc.wider {
				t.Errorf("widerRule = %v, want a rule: %v", got, tc.wider)
			}
			if got := AllowingRule(tc.rules, n); (got != nil) != (tc.wider || tc.exact) {
				t.Errorf("AllowingRule = %v, want a rule: %v", got, tc.wider || tc.exact)
			}
		})
	}
}
