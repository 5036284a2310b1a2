package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// testDevice is a fake GPU: major/minor are explicit, so no host node is needed.
const testDevice = "test.hotgpu.dev/gpu=0"

func TestCRIPodExec(t *testing.T) {
	t.Parallel()
	c := harness.Shared(t)
	pod := c.MustRunPod(t, "exec", map[string]string{"hotgpu.dev/test": "exec"})
	ctr := c.MustRunContainer(t, pod, "busybox", harness.ContainerOptions{Env: map[string]string{"HELLO": "world"}})

	stdout, stderr, code := c.MustExec(t, ctr, "sh", "-c", `echo "hello $HELLO"; echo oops >&2; exit 3`)
	if stdout != "hello world\n" || stderr != "oops\n" || code != 3 {
		t.Errorf("exec = (%q, %q, %d), want (\"hello world\\n\", \"oops\\n\", 3)", stdout, stderr, code)
	}
	ctx := context.Background()
	pid, err := c.CRI().ContainerPID(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.CRI().ContainerInfo(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.CgroupParent + "/"; !strings.HasPrefix(info.RuntimeSpec.Linux.CgroupsPath, want) {
		t.Errorf("cgroupsPath = %q, want it under %q", info.RuntimeSpec.Linux.CgroupsPath, want)
	}
	dir, err := c.CRI().DeviceCgroupDir(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("/sys/fs/cgroup/devices", info.RuntimeSpec.Linux.CgroupsPath); dir != want {
		t.Errorf("device cgroup of pid %d = %s, want %s", pid, dir, want)
	}
	if list := readFile(t, filepath.Join(dir, "devices.list")); strings.Contains(list, "a *:* rwm") {
		t.Errorf("container's devices.list allows everything:\n%s", list)
	}
}

func TestCRICDIDevice(t *testing.T) {
	t.Parallel()
	c := harness.Shared(t)
	writeTestCDISpec(t, c.CDIDir)
	pod := c.MustRunPod(t, "cdi", nil)
	ctr := c.MustRunContainer(t, pod, "gpu", harness.ContainerOptions{
		CDIDevices: []string{testDevice},
		AddCaps:    []string{"MKNOD"},
	})

	if out, _, _ := c.MustExec(t, ctr, "ls", "-l", "/dev/nvidia0"); !strings.HasPrefix(out, "c") || !strings.Contains(out, "195,   0") {
		t.Errorf("ls -l /dev/nvidia0 = %q, want a char device 195:0", out)
	}
	// ENXIO: the rule lets the open through to a driver that is not there.
	if _, stderr, code := c.MustExec(t, ctr, "cat", "/dev/nvidia0"); code == 0 || !strings.Contains(stderr, "No such device or address") {
		t.Errorf("cat /dev/nvidia0 = (%q, %d), want ENXIO", stderr, code)
	}
	if _, stderr, code := c.MustExec(t, ctr, "mknod", "/dev/nvidia1", "c", "195", "1"); code != 0 {
		t.Fatalf("mknod /dev/nvidia1 failed (%d): %s", code, stderr)
	}
	// EPERM: a node the container made itself is refused by the devices cgroup.
	if _, stderr, code := c.MustExec(t, ctr, "cat", "/dev/nvidia1"); code == 0 || !strings.Contains(stderr, "Operation not permitted") {
		t.Errorf("cat /dev/nvidia1 = (%q, %d), want EPERM", stderr, code)
	}
	dir, err := c.CRI().DeviceCgroupDir(context.Background(), ctr)
	if err != nil {
		t.Fatal(err)
	}
	list := readFile(t, filepath.Join(dir, "devices.list"))
	if !strings.Contains(list, "c 195:0 rw") || strings.Contains(list, "c 195:1 ") {
		t.Errorf("devices.list should allow c 195:0 and not c 195:1:\n%s", list)
	}
}

func TestCtrRunCDIDevice(t *testing.T) {
	t.Parallel()
	c := harness.Shared(t)
	writeTestCDISpec(t, c.CDIDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := `ls -l /dev/nvidia0 && cat /dev/nvidia0; mknod /dev/nvidia1 c 195 1 && cat /dev/nvidia1; true`

	res, err := c.CtrRun(ctx, fmt.Sprint("cdi-", time.Now().UnixNano()), harness.BusyboxImage,
		[]string{"sh", "-c", script}, "--device", testDevice)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "195,   0") {
		t.Fatalf("ctr run --device %s = %+v, want /dev/nvidia0 as 195:0", testDevice, res)
	}
	for _, want := range []string{"/dev/nvidia0': No such device or address", "/dev/nvidia1': Operation not permitted"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("ctr run stderr = %q, want it to contain %q", res.Stderr, want)
		}
	}

	res, err = c.CtrRun(ctx, fmt.Sprint("nodev-", time.Now().UnixNano()), harness.BusyboxImage, []string{"ls", "/dev/nvidia0"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode == 0 {
		t.Errorf("without --device, /dev/nvidia0 exists: %+v", res)
	}
}

func TestContainerdRestartKeepsContainers(t *testing.T) {
	t.Parallel()
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	pod := c.MustRunPod(t, "restart", nil)
	ctr := c.MustRunContainer(t, pod, "sleeper", harness.ContainerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pid, err := c.CRI().ContainerPID(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		stop func() error
	}{
		{"graceful", c.Stop},
		{"crash", c.Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.stop(); err != nil {
				t.Fatal(err)
			}
			if c.Running() {
				t.Fatal("containerd still running after stop")
			}
			start := time.Now()
			if err := c.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("restart took %v", time.Since(start).Round(time.Millisecond))
			if state, err := c.CRI().ContainerState(ctx, ctr); err != nil || state != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("after restart container state = %v, %v; want running", state, err)
			}
			if got, err := c.CRI().ContainerPID(ctx, ctr); err != nil || got != pid {
				t.Errorf("after restart container pid = %d, %v; want %d", got, err, pid)
			}
			if out, _, code := c.MustExec(t, ctr, "echo", "alive"); out != "alive\n" || code != 0 {
				t.Errorf("exec after restart = (%q, %d)", out, code)
			}
			if _, err := os.Stat(c.NRISocket); err != nil {
				t.Errorf("NRI socket not back after restart: %v", err)
			}
		})
	}
}

// TestCleanupLeavesNothing checks the harness itself: after Cleanup no shim,
// container process, mount, cgroup or dir of the instance is left.
func TestCleanupLeavesNothing(t *testing.T) {
	t.Parallel()
	bins := harness.Deps(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := harness.Start(ctx, harness.Options{Bins: bins})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.CRI().RunPod(ctx, "leak", harness.PodNamespace, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := c.CRI().RunContainer(ctx, pod, "sleeper", harness.ContainerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid, err := c.CRI().ContainerPID(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.CtrRun(ctx, "detached", harness.BusyboxImage, []string{"sleep", "600"}, "-d"); err != nil || res.ExitCode != 0 {
		t.Fatalf("ctr run -d = %+v, %v", res, err)
	}
	// A crashed containerd must not stop Cleanup either.
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Cleanup(); err != nil {
		t.Fatal(err)
	}

	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("container process %d survived cleanup", pid)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("dir %s survived cleanup: %v", c.Dir, err)
	}
	if m := readFile(t, "/proc/self/mountinfo"); strings.Contains(m, c.Dir) {
		t.Errorf("mounts under %s survived cleanup", c.Dir)
	}
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + c.CgroupParent); len(dirs) > 0 {
		t.Errorf("cgroups survived cleanup: %v", dirs)
	}
	if n := countProcs(t, c.Address); n > 0 {
		t.Errorf("%d processes mentioning %s survived cleanup", n, c.Address)
	}
}

// writeTestCDISpec writes the fake GPU's CDI spec with the CDI library.
func writeTestCDISpec(t *testing.T, dir string) {
	t.Helper()
	spec := &cdispec.Spec{
		Kind: "test.hotgpu.dev/gpu",
		Devices: []cdispec.Device{{
			Name: "0",
			ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{
				{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0},
			}},
		}},
	}
	version, err := cdi.MinimumRequiredVersion(spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Version = version
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WriteSpec(spec, "test.hotgpu.dev-gpu"); err != nil {
		t.Fatalf("failed to write CDI spec: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func countProcs(t *testing.T, needle string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), needle) {
			n++
		}
	}
	return n
}
