package hotplug

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// v1Cgroup makes a confined v1 devices cgroup like runc does: deny all, then
// allow /dev/null.
func v1Cgroup(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	self := ownTarget(t)
	if self.DevicesDir == "" {
		testenv.Skip(t, "no cgroup v1 devices hierarchy on this host")
	}
	dir := newCgroup(t, self.DevicesDir)
	writeCgroup(t, dir, "devices.deny", "a")
	writeCgroup(t, dir, "devices.allow", "c 1:3 rwm")
	return dir
}

func TestV1GrantRevoke(t *testing.T) {
	dir := v1Cgroup(t)
	c := startChild(t)
	writeCgroup(t, dir, "cgroup.procs", strconv.Itoa(c.pid))
	path, node := hostNode(t, t.TempDir(), gpu.NvidiaMajor, 7)

	c.expectOpen(t, path, "EPERM")
	c.expectOpen(t, "/dev/null", "ok")

	acc := NewV1(dir)
	expectHas(t, acc, node, false)
	for range 2 { // idempotent
		if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
			t.Fatalf("Grant: %v", err)
		}
		c.expectOpen(t, path, "ENXIO")
		expectHas(t, acc, node, true)
	}
	list, _ := os.ReadFile(filepath.Join(dir, "devices.list"))
	if !strings.Contains(string(list), "c 195:7 rwm") || strings.Contains(string(list), "*:* rwm") {
		t.Errorf("devices.list after Grant:\n%s", list)
	}
	for range 2 {
		if err := acc.Revoke([]gpu.DeviceNode{node}); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		c.expectOpen(t, path, "EPERM")
		expectHas(t, acc, node, false)
	}
	c.expectOpen(t, "/dev/null", "ok")

	tgt, err := TargetFromCgroupsPath(c.pid, "/"+filepath.Base(dir))
	if err != nil {
		t.Fatalf("TargetFromCgroupsPath: %v", err)
	}
	if tgt.DevicesDir != dir || tgt.Root != "/proc/"+strconv.Itoa(c.pid)+"/root" {
		t.Errorf("target = %+v, want devices dir %s", tgt, dir)
	}
	if _, err := TargetFromCgroupsPath(c.pid, "/elsewhere"); err == nil {
		t.Error("TargetFromCgroupsPath accepted a cgroup the pid is not in")
	}
	if pids, err := tgt.Procs(); err != nil || !slices.Equal(pids, []int{c.pid}) {
		t.Errorf("Procs = %v, %v; want [%d]", pids, err, c.pid)
	}
}

// A failing Grant must not leave the nodes before the bad one granted.
func TestV1GrantRollsBack(t *testing.T) {
	dir := v1Cgroup(t)
	good := gpu.DeviceNode{Path: "/dev/nvidia3", Major: gpu.NvidiaMajor, Minor: 3}
	bad := gpu.DeviceNode{Path: "/dev/nvidia-wild", Major: gpu.NvidiaMajor, Minor: -1}
	acc := NewV1(dir)
	if err := acc.Grant([]gpu.DeviceNode{good, bad}); err == nil {
		t.Fatal("Grant accepted a wildcard minor")
	}
	expectHas(t, acc, good, false)
	list, _ := os.ReadFile(filepath.Join(dir, "devices.list"))
	if strings.TrimSpace(string(list)) != "c 1:3 rwm" {
		t.Errorf("devices.list after failed Grant:\n%s", list)
	}
}

// An unconfined cgroup (privileged container) allows everything; Revoke must
// not deny a device hotgpu never granted there.
func TestV1Unconfined(t *testing.T) {
	requireRoot(t)
	self := ownTarget(t)
	if self.DevicesDir == "" {
		testenv.Skip(t, "no cgroup v1 devices hierarchy on this host")
	}
	dir := newCgroup(t, self.DevicesDir)
	node := gpu.DeviceNode{Path: "/dev/nvidia0", Major: gpu.NvidiaMajor, Minor: 0}
	acc := NewV1(dir)
	expectHas(t, acc, node, true)
	if err := acc.Grant([]gpu.DeviceNode{node}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if err := acc.Revoke([]gpu.DeviceNode{node}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	list, _ := os.ReadFile(filepath.Join(dir, "devices.list"))
	if strings.TrimSpace(string(list)) != "a *:* rwm" {
		t.Errorf("devices.list of unconfined cgroup changed:\n%s", list)
	}
}

// A wildcard from the container's own rules defeats a per-node deny: Revoke
// must say so instead of reporting success.
func TestV1RevokeUnderWildcard(t *testing.T) {
	dir := v1Cgroup(t)
	writeCgroup(t, dir, "devices.allow", "c 195:* rwm")
	node := gpu.DeviceNode{Path: "/dev/nvidia2", Major: gpu.NvidiaMajor, Minor: 2}
	writeCgroup(t, dir, "devices.allow", "c 195:2 rwm")
	before, _ := os.ReadFile(filepath.Join(dir, "devices.list"))
	if err := NewV1(dir).Revoke([]gpu.DeviceNode{node}); err == nil {
		t.Fatal("Revoke reported success while c 195:* rwm still allows the node")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "devices.list")); string(after) != string(before) {
		t.Errorf("failed Revoke changed devices.list:\n%s\nto\n%s", before, after)
	}
}

func expectHas(t *testing.T, acc DeviceAccess, n gpu.DeviceNode, want bool) {
	t.Helper()
	got, err := acc.Has(n)
	if err != nil {
		t.Fatalf("Has(%s): %v", n.Rule(), err)
	}
	if got != want {
		t.Errorf("Has(%s) = %v, want %v", n.Rule(), got, want)
	}
}

func TestParseDeviceList(t *testing.T) {
	n := gpu.DeviceNode{Major: 195, Minor: 1}
	for _, tc := range []struct {
		name, list       string
		allows, unconfin bool
		wantErr          bool
	}{
		{name: "unconfined", list: "a *:* rwm\n", allows: true, unconfin: true},
		{name: "exact", list: "c 1:3 rwm\nc 195:1 rwm\n", allows: true},
		{name: "other minor", list: "c 195:0 rwm\n", allows: false},
		{name: "minor wildcard", list: "c 195:* rw\n", allows: true},
		{name: "mknod only", list: "c *:* m\n", allows: false},
		{name: "read only", list: "c 195:1 r\n", allows: false},
		{name: "block", list: "b 195:1 rwm\n", allows: false},
		{name: "empty", list: "", allows: false},
		{name: "garbage", list: "c 195\n", wantErr: true},
		{name: "bad number", list: "c x:1 rwm\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := parseDeviceList(tc.list)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got := l.allows(n); got != tc.allows {
				t.Errorf("allows = %v, want %v", got, tc.allows)
			}
			if got := l.unconfined(); got != tc.unconfin {
				t.Errorf("unconfined = %v, want %v", got, tc.unconfin)
			}
		})
	}
}
