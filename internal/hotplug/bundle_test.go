package hotplug

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// writeBundle writes dir/config.json with the given cgroups path and one
// device rule of its own.
func writeBundle(t *testing.T, dir, cgroupsPath string) {
	t.Helper()
	major, minor := int64(10), int64(229)
	spec := specs.Spec{Version: specs.Version, Linux: &specs.Linux{CgroupsPath: cgroupsPath, Resources: &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}},
	}}}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shimIn starts a process working in dir, as a containerd shim works in its
// bundle.
func shimIn(t *testing.T, dir string) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

func TestFindBundle(t *testing.T) {
	requireRoot(t) // config.json must be root's
	ns := t.TempDir()
	writeBundle(t, filepath.Join(ns, "sandbox"), "kubepods.slice:cri-containerd:sandbox")
	writeBundle(t, filepath.Join(ns, "app"), "/k8s.io/app")
	if err := os.Symlink(filepath.Join(ns, "app"), filepath.Join(ns, "link")); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(ns, "evil")
	writeBundle(t, evil, "/k8s.io/evil")
	if err := os.Chown(filepath.Join(evil, "config.json"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	shim := shimIn(t, filepath.Join(ns, "sandbox"))
	for _, tc := range []struct{ cgroup, wantErr string }{
		{cgroup: "/kubepods.slice/cri-containerd-sandbox.scope"}, // the shim's own bundle
		{cgroup: "/k8s.io/app"},                                  // a pod's container, next to it
		{cgroup: "/k8s.io/evil", wantErr: "has cgroup"},          // not root's: not trusted
		{cgroup: "/k8s.io/other", wantErr: "has cgroup"},
	} {
		t.Run(tc.cgroup, func(t *testing.T) {
			spec, err := findBundle(shim, tc.cgroup)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("findBundle = %v, want error %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case specCgroup(spec) != tc.cgroup:
				t.Errorf("found the bundle of %q", spec.Linux.CgroupsPath)
			}
		})
	}
}

// A shim that does not work in a bundle gives no rules; a config.json that
// is a FIFO does not block.
func TestFindBundleOutsideABundle(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if _, err := findBundle(shimIn(t, dir), "/k8s.io/app"); err == nil {
		t.Error("found a bundle in a directory without config.json")
	}
	if err := unix.Mkfifo(filepath.Join(dir, "config.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := findBundle(shimIn(t, dir), "/k8s.io/app"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("findBundle with a FIFO config.json = %v, want a refusal", err)
	}
}

func TestDefaultRulesFor(t *testing.T) {
	all := defaultRulesFor(nil)
	if len(all) != len(DefaultRules()) {
		t.Fatalf("no spec devices: %d rules, want runc's %d", len(all), len(DefaultRules()))
	}
	some := defaultRulesFor([]specs.LinuxDevice{{Path: "/dev/null"}, {Path: "/dev/fuse"}})
	if len(some) != len(all)-1 {
		t.Errorf("spec lists /dev/null: %d rules, want %d (runc drops its default for a listed node)", len(some), len(all)-1)
	}
	for _, r := range some {
		if r.Major == 1 && r.Minor == 3 {
			t.Errorf("default rule for /dev/null kept: %v", r)
		}
	}
}
