package integration

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"
	specs "tags.cncf.io/container-device-interface/specs-go"
)

// TestAttachHostDevMount: a container whose /dev is a bind mount of the
// host's /dev (`docker run -v /dev:/dev`, a hostPath /dev) gets a GPU by pid
// and loses it again, and every node of that /dev is still there, the same
// inode: hotgpu grants and revokes the cgroup rule but neither creates nor
// removes nodes in a /dev it shares with the host. A private tmpfs made here,
// holding the nodes of hotgpud's CDI spec, stands in for the host's /dev;
// the real /dev is never touched.
func TestAttachHostDevMount(t *testing.T) {
	env := startEnv(t)
	c, d := env.c, env.d
	hostDev := fakeHostDev(t, specNodes(t, filepath.Join(c.CDIDir, "hotgpu.yaml")))
	before := charDevices(t, hostDev)
	id, pid := ctrTask(t, c, "--mount", "type=bind,src="+hostDev+",dst=/dev,options=rbind:rw")
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "EPERM" {
		t.Fatalf("before attach: open /dev/nvidia3 (the host's node) = %s, want EPERM", got)
	}

	out := mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	if !strings.Contains(out, "nodes:") || !strings.Contains(out, "host") {
		t.Errorf("attach does not say it left the nodes of the host's /dev alone:\n%s", out)
	}
	for _, p := range []string{"/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if got := ctrOpen(t, c, id, p); got != "ENXIO" {
			t.Errorf("after attach, open %s = %s, want ENXIO (allowed, no driver)", p, got)
		}
	}
	if got := charDevices(t, hostDev); !maps.Equal(got, before) {
		t.Errorf("attach changed the host's /dev stand-in:\nbefore %v\nafter  %v", before, got)
	}

	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	if got := charDevices(t, hostDev); !maps.Equal(got, before) {
		t.Fatalf("detach changed the host's /dev stand-in:\nbefore %v\nafter  %v", before, got)
	}
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "EPERM" {
		t.Errorf("after detach, open /dev/nvidia3 = %s, want EPERM (rule revoked, node kept)", got)
	}
	if _, held := d.holders(t)[3]; held {
		t.Errorf("GPU 3 still held after detach: %v", d.holders(t))
	}
}

// specNodes returns every device node hotgpud's CDI spec names.
func specNodes(t *testing.T, path string) []specs.DeviceNode {
	t.Helper()
	var spec specs.Spec
	if err := yaml.Unmarshal([]byte(readFile(t, path)), &spec); err != nil {
		t.Fatalf("failed to read the CDI spec %s: %v", path, err)
	}
	nodes := map[string]specs.DeviceNode{}
	for _, n := range spec.ContainerEdits.DeviceNodes {
		nodes[n.Path] = *n
	}
	for _, dev := range spec.Devices {
		for _, n := range dev.ContainerEdits.DeviceNodes {
			nodes[n.Path] = *n
		}
	}
	if len(nodes) == 0 {
		t.Fatalf("the CDI spec %s names no device node", path)
	}
	return slices.Collect(maps.Values(nodes))
}

// fakeHostDev mounts a private tmpfs holding nodes (paths below /dev) and,
// as a host's /dev does, the null and zero devices (runc masks paths with
// /dev/null): a stand-in for the host's /dev that the test can lose.
func fakeHostDev(t *testing.T, nodes []specs.DeviceNode) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("hotgpu-test-dev", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
		t.Fatalf("failed to mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	nodes = append(nodes, specs.DeviceNode{Path: "/dev/null", Major: 1, Minor: 3}, specs.DeviceNode{Path: "/dev/zero", Major: 1, Minor: 5})
	for _, n := range nodes {
		rel, ok := strings.CutPrefix(n.Path, "/dev/")
		if !ok || n.Major == 0 {
			t.Fatalf("CDI spec node %+v: want a /dev path and a device number", n)
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(n.Major), uint32(n.Minor)))); err != nil {
			t.Fatalf("failed to make %s: %v", p, err)
		}
	}
	return dir
}

// charDevices maps every character device below dir to its inode and device
// number.
func charDevices(t *testing.T, dir string) map[string][2]uint64 {
	t.Helper()
	out := map[string][2]uint64{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.Type()&os.ModeCharDevice == 0 {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		out[p] = [2]uint64{st.Ino, st.Rdev}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no device node in %s", dir)
	}
	return out
}
