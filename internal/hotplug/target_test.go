package hotplug

import (
	"os"
	"strconv"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

func TestCgroupRelPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/k8s.io/abc", want: "/k8s.io/abc"},
		{in: "/k8s.io/../../abc", want: "/abc"},
		{in: "kubepods-besteffort-pod12.slice:cri-containerd:abc", want: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"},
		{in: ":docker:abc", want: "/system.slice/docker-abc.scope"},
		{in: "machine.slice::x.slice", want: "/machine.slice/x.slice"},
		{in: "k8s.io/abc", wantErr: true},
		{in: "a:b", wantErr: true},
		{in: "bad:cri:", wantErr: true},
		{in: "bad-.slice:cri:x", wantErr: true},
		{in: "a.slice:cri/..:x", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := cgroupRelPath(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("cgroupRelPath = %q, %v; want %q (err %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestHierarchyDir(t *testing.T) {
	mounts := []*mountinfo.Info{
		{FSType: "cgroup", VFSOptions: "rw,cpu", Root: "/", Mountpoint: "/sys/fs/cgroup/cpu"},
		{FSType: "cgroup", VFSOptions: "rw,devices", Root: "/kubepods", Mountpoint: "/host/devices"},
		{FSType: "cgroup", VFSOptions: "rw,devices", Root: "/", Mountpoint: "/sys/fs/cgroup/devices"},
		{FSType: "cgroup2", Root: "/", Mountpoint: "/sys/fs/cgroup/unified"},
	}
	for _, tc := range []struct{ p, want string }{
		{p: "/kubepods/pod1/c1", want: "/host/devices/pod1/c1"},
		{p: "/k8s.io/c1", want: "/sys/fs/cgroup/devices/k8s.io/c1"},
		{p: "/kubepodsX/c1", want: "/sys/fs/cgroup/devices/kubepodsX/c1"},
	} {
		if got := hierarchyDir(mounts, isV1Devices, tc.p); got != tc.want {
			t.Errorf("hierarchyDir(%s) = %s, want %s", tc.p, got, tc.want)
		}
	}
	if got := hierarchyDir(mounts, isCgroup2, "/a"); got != "/sys/fs/cgroup/unified/a" {
		t.Errorf("unified dir = %s", got)
	}
}

func TestTargetFromPID(t *testing.T) {
	self, err := TargetFromPID(os.Getpid())
	if err != nil {
		testenv.Skipf(t, "no cgroup hierarchy: %v", err)
	}
	if self.Root != "/proc/"+strconv.Itoa(os.Getpid())+"/root" {
		t.Errorf("Root = %s", self.Root)
	}
	for _, d := range []string{self.DevicesDir, self.UnifiedDir} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(d + "/cgroup.procs"); err != nil {
			t.Errorf("cgroup dir %s: %v", d, err)
		}
	}
	if _, err := TargetFromPID(1 << 30); err == nil {
		t.Error("TargetFromPID accepted a pid that does not exist")
	}
}

func TestRulesFromSpec(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	rules, err := RulesFromSpec([]specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: i(195), Minor: i(0), Access: "rw"},
		{Allow: true, Type: "b", Major: i(8), Access: "r"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a *:* rwm", "c 195:0 rw", "b 8:* r"}
	for k, r := range rules {
		if r.CgroupString() != want[k] {
			t.Errorf("rule %d = %s, want %s", k, r.CgroupString(), want[k])
		}
	}
	for _, bad := range []specs.LinuxDeviceCgroup{{Type: "x", Access: "r"}, {Type: "c", Access: "rx"}, {Type: "c"}} {
		if _, err := RulesFromSpec([]specs.LinuxDeviceCgroup{bad}); err == nil {
			t.Errorf("RulesFromSpec accepted %+v", bad)
		}
	}
}
