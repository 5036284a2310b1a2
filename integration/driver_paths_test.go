package integration

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestDriverLibrariesEveryPath runs CRI pods through containerd with
// hotgpud plugged in over NRI, --simulate with a fake driver root and the
// built hotgpu-hook: a container given a GPU by annotation, and one created
// with no GPU under the hotplug annotation that gets one by live attach,
// both see libcuda.so.1 and libcuda.so through their linker cache (the
// host's static ldconfig, mounted in, lists it), with read-write and
// read-only roots. Before, both had device nodes only.
func TestDriverLibrariesEveryPath(t *testing.T) {
	info, err := os.Stat(hostLDConfig)
	if err != nil || !info.Mode().IsRegular() {
		testenv.Skipf(t, "needs glibc's static %s (package libc-bin): %v", hostLDConfig, err)
	}
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	root := drivertest.New(t, drivertest.Options{Version: simDriverVersion(t)})
	d := startHotgpud(t, c, "--driver-root", root.Dir, "--hook-path", buildBin(t, "./cmd/hotgpu-hook"))

	for _, ro := range []bool{false, true} {
		opts := harness.ContainerOptions{ReadOnlyRoot: ro, ReadOnlyMounts: map[string]string{hostLDConfig: "/sbin/ldconfig"}}
		suffix := map[bool]string{false: "", true: ", read-only root"}[ro]
		t.Run("annotation"+suffix, func(t *testing.T) {
			name := fmt.Sprint("ann-", time.Now().UnixNano())
			pod := c.MustRunPod(t, name, map[string]string{"gpus.hotgpu.dev/container.app": "1"})
			id := c.MustRunContainer(t, pod, "app", opts)
			checkDriverLibraries(t, c, id, root, ro)
			if len(gpuNodes(t, c, id)) != 1 {
				t.Errorf("GPU nodes %v, want one", gpuNodes(t, c, id))
			}
		})
		t.Run("hotplug then live attach"+suffix, func(t *testing.T) {
			name := fmt.Sprint("hot-", time.Now().UnixNano())
			pod := c.MustRunPod(t, name, map[string]string{policy.HotplugAnnotation: "true"})
			id := c.MustRunContainer(t, pod, "app", opts)
			if n := append(gpuNodes(t, c, id), controlNodes(t, c, id)...); len(n) != 0 || len(heldBy(t, d, id)) != 0 {
				t.Fatalf("hotplug container before attach has nodes %v, GPUs %v", n, heldBy(t, d, id))
			}
			if out := mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/"+name, "--count", "1"); !strings.Contains(out, "driver files already in the container") {
				t.Errorf("attach to a hotplug container: %s", out)
			}
			gpus := heldBy(t, d, id)
			if len(gpus) != 1 {
				t.Fatalf("attach: the ledger gives the container %v", gpus)
			}
			if got := openIn(t, c, id, "/dev/"+nodeNames(gpus...)[0]); got != "ENXIO" {
				t.Errorf("attached GPU: open = %s, want ENXIO (allowed, no driver)", got)
			}
			checkDriverLibraries(t, c, id, root, ro)
			// Detach takes the GPU; the libraries stay (read-only files of
			// the host driver, harmless without a device node).
			mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/"+name, "--all")
			if n := gpuNodes(t, c, id); len(n) != 0 {
				t.Errorf("after detach the container has %v", n)
			}
			checkDriverLibraries(t, c, id, root, ro)
		})
	}
	// A container created with no GPU and no annotation gets the driver
	// at attach, and a linker cache that lists it mounted over its own
	// /etc/ld.so.cache: the container's file is never rewritten under its
	// running programs. With the last GPU the mount goes and the container
	// sees its own file again; one it did not have is made to mount on and
	// removed again.
	for _, own := range []bool{true, false} {
		name := map[bool]string{true: "live attach mounts the driver", false: "live attach mounts the driver, no ld.so.cache"}[own]
		t.Run(name, func(t *testing.T) {
			pod := c.MustRunPod(t, fmt.Sprint("live-drv-", own), nil)
			id := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{ReadOnlyMounts: map[string]string{hostLDConfig: "/sbin/ldconfig"}})
			target := harness.PodNamespace + "/live-drv-" + fmt.Sprint(own)
			if own { // the container's own cache, made by itself
				if _, errOut, code := c.MustExec(t, id, "/sbin/ldconfig"); code != 0 {
					t.Fatalf("ldconfig in the container: exit %d: %s", code, errOut)
				}
			}
			before := cacheSeen(t, c, id)
			if own != (before != "none") {
				t.Fatalf("setup: the container's /etc/ld.so.cache: %s", before)
			}
			underlying := filepath.Join(c.State, "io.containerd.runtime.v2.task", "k8s.io", id, "rootfs", "etc", "ld.so.cache")
			hostBefore := drivertest.FileSeen(t, underlying)
			if out, _, _ := c.MustExec(t, id, "/sbin/ldconfig", "-p"); strings.Contains(out, "libcuda") {
				t.Fatalf("before attach the container lists libcuda:\n%s", out)
			}
			out := mustCLI(t, d, "attach", "--pod", target, "--count", "1")
			if !strings.Contains(out, "driver files mounted into the container") || !strings.Contains(out, "/etc/ld.so.cache") {
				t.Errorf("attach output: %s", out)
			}
			checkDriverLibraries(t, c, id, root, false)
			// Underneath the mount: the container's own file as it was, or
			// the empty file made to mount on where it had none.
			if got := drivertest.FileSeen(t, underlying); own && got != hostBefore ||
				!own && !strings.HasSuffix(got, fmt.Sprintf("sha256 %x", sha256.Sum256(nil))) {
				t.Errorf("the container's /etc/ld.so.cache underneath the mount: %s -> %s", hostBefore, got)
			}
			if again := mustCLI(t, d, "attach", "--pod", target, "--count", "1"); !strings.Contains(again, "driver files already in the container") {
				t.Errorf("second attach output: %s", again)
			}
			mustCLI(t, d, "detach", "--pod", target, "--gpu", strconv.Itoa(heldBy(t, d, id)[0]))
			checkDriverLibraries(t, c, id, root, false) // one GPU left: the cache stays
			mustCLI(t, d, "detach", "--pod", target, "--all")
			if got := cacheSeen(t, c, id); got != before {
				t.Errorf("after the last detach the container sees /etc/ld.so.cache as %s, want its own view back: %s", got, before)
			}
			if got := drivertest.FileSeen(t, underlying); got != hostBefore {
				t.Errorf("the container's own /etc/ld.so.cache after detach: %s, before attach: %s", got, hostBefore)
			}
			if out, _, _ := c.MustExec(t, id, "/sbin/ldconfig", "-p"); strings.Contains(out, "libcuda") {
				t.Errorf("after the last detach the container's linker cache lists libcuda:\n%s", out)
			}
		})
	}
	// A read-only root cannot take new mount points, so it gets the GPU, no
	// driver files, nothing changed, and a note that says what to do.
	t.Run("live attach, read-only root", func(t *testing.T) {
		pod := c.MustRunPod(t, "live-ro", nil)
		id := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{ReadOnlyRoot: true, ReadOnlyMounts: map[string]string{hostLDConfig: "/sbin/ldconfig"}})
		before, _, _ := c.MustExec(t, id, "ls", "-la", drivertest.LibDir, "/usr/lib")
		out := mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/live-ro", "--count", "1")
		if len(heldBy(t, d, id)) != 1 || !strings.Contains(out, "driver files not given") ||
			!strings.Contains(out, "read-only file system") || !strings.Contains(out, policy.HotplugAnnotation) {
			t.Errorf("attach to a read-only root: GPUs %v, output: %s", heldBy(t, d, id), out)
		}
		if after, _, _ := c.MustExec(t, id, "ls", "-la", drivertest.LibDir, "/usr/lib"); after != before {
			t.Errorf("a refused driver mount changed the container:\n%s\n->\n%s", before, after)
		}
		mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/live-ro", "--all")
	})
	t.Run("live attach by pid, ctr container", func(t *testing.T) {
		id, pid := ctrTask(t, c, "--mount", "type=bind,src="+hostLDConfig+",dst=/sbin/ldconfig,options=rbind:ro")
		out := mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--count", "1")
		if !strings.Contains(out, "driver files mounted into the container") {
			t.Errorf("attach output: %s", out)
		}
		res := ctrExec(t, c, id, "/sbin/ldconfig", "-p")
		lib := drivertest.LibDir
		for _, want := range []string{"libcuda.so.1 (libc6,x86-64) => " + lib + "/libcuda.so.1", "libcuda.so (libc6,x86-64) => " + lib + "/libcuda.so"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("ldconfig -p in the ctr container lacks %q: %+v", want, res)
			}
		}
		mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	})
	t.Run("no annotation, no driver", func(t *testing.T) {
		pod := c.MustRunPod(t, "plain", nil)
		id := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
		if out, _, code := c.MustExec(t, id, "ls", drivertest.LibDir); code == 0 && strings.Contains(out, "libcuda") {
			t.Errorf("a container that asked nothing has driver files:\n%s", out)
		}
	})
}

// checkDriverLibraries checks that ldconfig -p in the container lists the
// fake driver's libcuda.so.1 and libcuda.so, resolving to its version, and
// that a read-only root stayed read-only.
func checkDriverLibraries(t *testing.T, c *harness.Containerd, id string, root *drivertest.Root, ro bool) {
	t.Helper()
	lib := drivertest.LibDir
	out, errOut, code := c.MustExec(t, id, "sh", "-c", fmt.Sprintf(`/sbin/ldconfig -p && readlink -f %s/libcuda.so &&
		if touch /probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi`, lib))
	if code != 0 {
		t.Fatalf("ldconfig -p in the container: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"libcuda.so.1 (libc6,x86-64) => " + lib + "/libcuda.so.1",
		"libcuda.so (libc6,x86-64) => " + lib + "/libcuda.so",
		"libnvidia-ml.so.1 (libc6,x86-64) => " + lib + "/libnvidia-ml.so.1",
		lib + "/libcuda.so." + root.Version + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("container output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, drivertest.StaleVersion) {
		t.Errorf("container sees the stale driver %s:\n%s", drivertest.StaleVersion, out)
	}
	if want := map[bool]string{false: "root-writable", true: "root-read-only"}[ro]; !strings.Contains(out, want) {
		t.Errorf("container output lacks %q:\n%s", want, out)
	}
}

// TestHookRuncDriverLibraries: hotgpu-hook prestart under runc run directly
// (as Docker and podman run it) mounts the driver's files into the
// container's mount namespace itself, since a hook cannot add mounts to the
// spec: with hotgpud, which names the fake driver root's files, and
// standalone, which finds them under --driver-root for the kernel module's
// version; read-write and read-only roots. ldconfig -p inside lists
// libcuda.so.1 and libcuda.so.
func TestHookRuncDriverLibraries(t *testing.T) {
	info, err := os.Stat(hostLDConfig)
	if err != nil || !info.Mode().IsRegular() {
		testenv.Skipf(t, "needs glibc's static %s (package libc-bin): %v", hostLDConfig, err)
	}
	e := newRuncEnv(t)
	root := drivertest.New(t, drivertest.Options{Version: simDriverVersion(t)})
	must(t, os.WriteFile(filepath.Join(e.proc, "version"),
		[]byte("NVRM version: NVIDIA UNIX x86_64 Kernel Module  "+root.Version+"  Tue Jan 1 00:00:00 UTC 2026\n"), 0o444))
	d := startHotgpudNoNRI(t, "--driver-root", root.Dir, "--hook-path", e.hook)
	lib := drivertest.LibDir
	script := fmt.Sprintf(`/sbin/ldconfig -p && busybox readlink -f %s/libcuda.so &&
		if busybox touch /probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi`, lib)
	modes := map[string][]string{
		"hotgpud":    {"--api-socket", d.socket},
		"standalone": {"--standalone", "--api-socket", "", "--driver-root", root.Dir},
	}
	for name, hookArgs := range modes {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, read-only root %t", name, ro), func(t *testing.T) {
				id := fmt.Sprint("hook-drv-", time.Now().UnixNano())
				b := e.bundle(id, script, []string{"NVIDIA_VISIBLE_DEVICES=0"}, nil, hookArgs...)
				editSpec(t, b, func(s *oci.Spec) {
					s.Root.Readonly = ro
					s.Mounts = append(s.Mounts, oci.Mount{Destination: "/sbin/ldconfig", Source: hostLDConfig, Type: "bind", Options: []string{"rbind", "ro"}})
				})
				stdout, stderr, code := e.run(id, b)
				if code != 0 {
					t.Fatalf("runc run exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
				}
				for _, want := range []string{
					"libcuda.so.1 (libc6,x86-64) => " + lib + "/libcuda.so.1",
					"libcuda.so (libc6,x86-64) => " + lib + "/libcuda.so",
					lib + "/libcuda.so." + root.Version + "\n",
					map[bool]string{false: "root-writable", true: "root-read-only"}[ro],
				} {
					if !strings.Contains(stdout, want) {
						t.Errorf("container output lacks %q:\nstdout:\n%s\nstderr:\n%s", want, stdout, stderr)
					}
				}
				if mounts := readFile(t, "/proc/self/mountinfo"); strings.Contains(mounts, b) {
					t.Errorf("a mount of the container is left in the host's namespace:\n%s", mounts)
				}
			})
		}
	}
}

// editSpec changes the bundle's config.json.
func editSpec(t *testing.T, bundle string, edit func(*oci.Spec)) {
	t.Helper()
	path := filepath.Join(bundle, "config.json")
	var spec oci.Spec
	data, err := os.ReadFile(path)
	must(t, err)
	must(t, json.Unmarshal(data, &spec))
	edit(&spec)
	data, err = json.Marshal(&spec)
	must(t, err)
	must(t, os.WriteFile(path, data, 0o644))
}

// cacheSeen is how the container sees its /etc/ld.so.cache: inode and
// checksum, or "none".
func cacheSeen(t *testing.T, c *harness.Containerd, id string) string {
	t.Helper()
	out, _, code := c.MustExec(t, id, "sh", "-c", "if [ -e /etc/ld.so.cache ]; then ls -i /etc/ld.so.cache && md5sum /etc/ld.so.cache; else echo none; fi")
	if code != 0 {
		t.Fatalf("stat /etc/ld.so.cache in the container: exit %d: %s", code, out)
	}
	return strings.TrimSpace(out)
}
