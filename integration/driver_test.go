package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/nvml"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// hostLDConfig is glibc's ldconfig, statically linked on Debian and Ubuntu:
// the test mounts it into the busybox container (which has none) to list
// the container's linker cache the way a user would.
const hostLDConfig = "/sbin/ldconfig"

// simDriverVersion is the driver version the simulation reports, which a
// fake driver root must carry for hotgpud --simulate to find its files.
func simDriverVersion(t *testing.T) string {
	t.Helper()
	p, err := nvml.New(nvml.WithSimulate("dgxa100"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv.DriverVersion
}

// TestCtrRunDriverLibraries runs the driver-library chain end to end on the
// real runtime: hotgpud --simulate with a fake driver root laid out like a
// real install and the built hotgpu-hook writes a spec; `ctr run --device
// nvidia.com/gpu=0` mounts the versioned libraries, hotgpu-hook makes the
// SONAME and libcuda.so links in the container and refreshes its linker
// cache, and ldconfig -p inside lists libcuda.so.1 and libcuda.so. A
// read-only root gets the same: the hooks run before runc makes it
// read-only. A CRI container given the device by CDI (as kubelet's
// allocation does) gets the same linker cache.
func TestCtrRunDriverLibraries(t *testing.T) {
	info, err := os.Stat(hostLDConfig)
	if err != nil || !info.Mode().IsRegular() {
		testenv.Skipf(t, "needs glibc's static %s (package libc-bin): %v", hostLDConfig, err)
	}
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	root := drivertest.New(t, drivertest.Options{Version: simDriverVersion(t)})
	hook := buildBin(t, "./cmd/hotgpu-hook")
	startHotgpudNoNRI(t, "--cdi-dir", c.CDIDir, "--driver-root", root.Dir, "--hook-path", hook)

	lib := drivertest.LibDir
	script := fmt.Sprintf(`ls -l %[1]s/libcuda.so* && ls %[1]s/ && readlink -f %[1]s/libcuda.so && /sbin/ldconfig -p &&
		if touch /probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi`, lib)
	for name, flags := range map[string][]string{"read-write root": nil, "read-only root": {"--read-only"}} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := append([]string{"--device", "nvidia.com/gpu=0",
				"--mount", "type=bind,src=" + hostLDConfig + ",dst=/sbin/ldconfig,options=rbind:ro"}, flags...)
			res, err := c.CtrRun(ctx, fmt.Sprint("drvlib-", time.Now().UnixNano()), harness.BusyboxImage,
				[]string{"sh", "-c", script}, args...)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 {
				t.Fatalf("ctr run = %+v", res)
			}
			if mode := "root-read-only"; (name == "read-only root") != strings.Contains(res.Stdout, mode) {
				t.Errorf("%s: container output %q", name, res.Stdout)
			}
			versioned := "libcuda.so." + root.Version
			for _, want := range []string{
				lib + "/libcuda.so -> libcuda.so.1",
				lib + "/libcuda.so.1 -> " + versioned,
				lib + "/" + versioned + "\n", // readlink -f: the chain ends at the mounted file
				"libcuda.so.1 (libc6,x86-64) => " + lib + "/libcuda.so.1",
				"libcuda.so (libc6,x86-64) => " + lib + "/libcuda.so",
				"libnvidia-ml.so.1 (libc6,x86-64) => " + lib + "/libnvidia-ml.so.1",
			} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("container output lacks %q:\n%s", want, res.Stdout)
				}
			}
			for _, never := range []string{drivertest.StaleVersion, "libnvidia-glcore", "i386"} {
				if strings.Contains(res.Stdout, never) {
					t.Errorf("container sees %q, which it must not get:\n%s", never, res.Stdout)
				}
			}
		})
	}

	t.Run("CRI CDIDevices", func(t *testing.T) {
		pod := c.MustRunPod(t, "drvlib", nil)
		id := c.MustRunContainer(t, pod, "main", harness.ContainerOptions{CDIDevices: []string{"nvidia.com/gpu=0"}})
		// busybox has no ldconfig: read the cache the hook had ldconfig write.
		cache, errOut, code := c.MustExec(t, id, "cat", driver.LDCachePath)
		if code != 0 {
			t.Fatalf("cat %s: exit %d: %s", driver.LDCachePath, code, errOut)
		}
		entries, err := driver.ParseLDCache([]byte(cache))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []driver.LDCacheEntry{
			{Name: "libcuda.so.1", Path: lib + "/libcuda.so.1", Is64: true},
			{Name: "libcuda.so", Path: lib + "/libcuda.so", Is64: true},
		} {
			if !slices.Contains(entries, want) {
				t.Errorf("the container's linker cache lacks %+v: %+v", want, entries)
			}
		}
		if out, _, _ := c.MustExec(t, id, "readlink", lib+"/libcuda.so.1"); strings.TrimSpace(out) != "libcuda.so."+root.Version {
			t.Errorf("libcuda.so.1 -> %q, want libcuda.so.%s", out, root.Version)
		}
	})
}
