package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// openIn reports what opening path inside a container gives: ok, ENXIO
// (allowed, no driver), EPERM (denied by the device cgroup) or ENOENT.
func openIn(t *testing.T, c *harness.Containerd, ctr, path string) string {
	t.Helper()
	_, stderr, code := c.MustExec(t, ctr, "cat", path)
	switch {
	case code == 0:
		return "ok"
	case strings.Contains(stderr, "No such device or address"):
		return "ENXIO"
	case strings.Contains(stderr, "Operation not permitted"):
		return "EPERM"
	case strings.Contains(stderr, "No such file"):
		return "ENOENT"
	}
	return stderr
}

// gpuNodes lists /dev/nvidia[0-9]* inside the container.
func gpuNodes(t *testing.T, c *harness.Containerd, ctr string) []string {
	t.Helper()
	out, _, _ := c.MustExec(t, ctr, "sh", "-c", "cd /dev && ls -d nvidia[0-9]* 2>/dev/null; true")
	return strings.Fields(out)
}

func devicesList(t *testing.T, c *harness.Containerd, ctr string) string {
	t.Helper()
	dir, err := c.CRI().DeviceCgroupDir(context.Background(), ctr)
	if err != nil {
		t.Fatal(err)
	}
	return readFile(t, filepath.Join(dir, "devices.list"))
}

// TestNRIInjection runs real pods through containerd with hotgpud plugged in
// over NRI: annotation requests, the refusals, and release on removal.
func TestNRIInjection(t *testing.T) {
	env := startEnv(t)
	c, d := env.c, env.d
	ann := func(v string) map[string]string { return map[string]string{"gpus.hotgpu.dev/container.app": v} }
	ctx := context.Background()

	t.Run("annotation gets exactly its GPUs", func(t *testing.T) {
		pod := c.MustRunPod(t, "two", ann("2"))
		ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{AddCaps: []string{"MKNOD"}})
		nodes := gpuNodes(t, c, ctr)
		if !slices.Equal(nodes, []string{"nvidia0", "nvidia1"}) {
			t.Fatalf("GPU nodes in container = %v, want [nvidia0 nvidia1]", nodes)
		}
		for _, p := range []string{"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
			if got := openIn(t, c, ctr, p); got != "ENXIO" {
				t.Errorf("open %s = %s, want ENXIO (allowed, no driver)", p, got)
			}
		}
		// CVE-2021-1056: the container makes a node for a GPU it was not given.
		if _, stderr, code := c.MustExec(t, ctr, "mknod", "/dev/nvidia5", "c", "195", "5"); code != 0 {
			t.Fatalf("mknod: %s", stderr)
		}
		if got := openIn(t, c, ctr, "/dev/nvidia5"); got != "EPERM" {
			t.Errorf("open self-made /dev/nvidia5 = %s, want EPERM", got)
		}
		list := devicesList(t, c, ctr)
		if !strings.Contains(list, "c 195:0 rw") || !strings.Contains(list, "c 195:1 rw") ||
			strings.Contains(list, "195:*") || strings.Contains(list, "a *:*") || strings.Contains(list, "c 195:5") {
			t.Errorf("devices.list must allow exactly GPUs 0 and 1, no wildcard:\n%s", list)
		}
		env, _, _ := c.MustExec(t, ctr, "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES")
		if want := d.uuid(t, 0) + "," + d.uuid(t, 1); strings.TrimSpace(env) != want {
			t.Errorf("NVIDIA_VISIBLE_DEVICES = %q, want %q", env, want)
		}
		if h := d.holders(t); h[0] != "annotation:"+ctr || h[1] != "annotation:"+ctr || len(h) != 2 {
			t.Errorf("ledger = %v", h)
		}
	})
	if len(d.holders(t)) != 0 {
		t.Fatalf("removing the pod left GPUs held: %v", d.holders(t))
	}

	t.Run("bad requests fail creation and change nothing", func(t *testing.T) {
		held := c.MustRunPod(t, "holder", ann("4"))
		c.MustRunContainer(t, held, "app", harness.ContainerOptions{})
		before := d.holders(t)
		for _, tc := range []struct{ value, ns, want string }{
			{"two", harness.PodNamespace, "not a number"},
			{"9,1", harness.PodNamespace, "GPU 9 does not exist"},
			{"0,/dev/nvidia1", harness.PodNamespace, "is not a GPU index or UUID"},
			{"6", harness.PodNamespace, "6 GPUs requested, at most 4"},
			{"4,5,6,7", harness.PodNamespace, ""}, // fits: proves the refusals below are about state
			{"1", harness.PodNamespace, "1 requested, 0 free"},
			{"1", "default", "namespace not allowed"},
		} {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			pod, err := c.CRI().RunPod(ctx, fmt.Sprintf("bad-%d", time.Now().UnixNano()), tc.ns, "", ann(tc.value))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.CRI().RunContainer(ctx, pod, "app", harness.ContainerOptions{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("%q: %v", tc.value, err)
				}
				before = d.holders(t)
				t.Cleanup(func() {
					_ = c.CRI().StopPod(context.Background(), pod)
					_ = c.CRI().RemovePod(context.Background(), pod)
				})
				cancel()
				continue
			}
			if err == nil || !strings.Contains(err.Error(), "gpus.hotgpu.dev/container.app") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("annotation %q in %s: err = %v, want one naming the annotation and %q", tc.value, tc.ns, err, tc.want)
			}
			if after := d.holders(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("refused request changed the ledger: %v -> %v", before, after)
			}
			_ = c.CRI().StopPod(ctx, pod)
			_ = c.CRI().RemovePod(ctx, pod)
			cancel()
		}
	})
	if len(d.holders(t)) != 0 {
		t.Fatalf("removing pods left GPUs held: %v", d.holders(t))
	}

	t.Run("no annotation, no GPU", func(t *testing.T) {
		pod := c.MustRunPod(t, "plain", nil)
		ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{Env: map[string]string{"NVIDIA_VISIBLE_DEVICES": "all"}})
		if nodes := gpuNodes(t, c, ctr); len(nodes) != 0 {
			t.Fatalf("container without a request has %v", nodes)
		}
		if list := devicesList(t, c, ctr); strings.Contains(list, "c 195:") {
			t.Fatalf("container without a request may open GPUs:\n%s", list)
		}
		if h := d.holders(t); len(h) != 0 {
			t.Fatalf("ledger gives a container without a request %v", h)
		}
	})
}

// TestNRIRestarts proves that no assignment is lost when hotgpud is killed
// (-9) or containerd restarts, and that what changed meanwhile is reconciled.
func TestNRIRestarts(t *testing.T) {
	env := startEnv(t)
	c, d := env.c, env.d
	ctx := context.Background()
	ann := map[string]string{"gpus.hotgpu.dev/container.app": "1"}

	keep := c.MustRunPod(t, "keep", ann)
	keepCtr := c.MustRunContainer(t, keep, "app", harness.ContainerOptions{})
	gone, err := c.CRI().RunPod(ctx, "gone", harness.PodNamespace, "", ann)
	if err != nil {
		t.Fatal(err)
	}
	goneCtr, err := c.CRI().RunContainer(ctx, gone, "app", harness.ContainerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := d.holders(t); len(h) != 2 {
		t.Fatalf("ledger = %v", h)
	}

	d.kill9()
	// Both assignments are on disk, not only in the dead process (the
	// restart's Synchronize could rebuild them from the specs alone).
	persisted := readFile(t, filepath.Join(d.dir, "state", "ledger.json"))
	for _, id := range []string{keepCtr, goneCtr} {
		if !strings.Contains(persisted, id) {
			t.Fatalf("ledger file does not record container %s:\n%s", id, persisted)
		}
	}
	// While hotgpud is down one pod goes away; NRI cannot tell it.
	must(t, c.CRI().StopPod(ctx, gone))
	must(t, c.CRI().RemovePod(ctx, gone))
	d.start()
	// NRI reports connected before its first Synchronize has run: wait for it.
	want := map[int]string{0: "annotation:" + keepCtr}
	if h := waitHolders(t, d, want); !equalHolders(h, want) {
		t.Fatalf("after kill -9 and restart, ledger = %v, want only GPU 0 for %s", h, keepCtr)
	}
	if nodes := gpuNodes(t, c, keepCtr); !slices.Equal(nodes, []string{"nvidia0"}) {
		t.Fatalf("running container lost its GPU: %v", nodes)
	}

	// containerd restarts: hotgpud reconnects by itself and keeps working.
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	must(t, c.Restart(rctx))
	d.waitConnected()
	next := c.MustRunPod(t, "next", ann)
	nextCtr := c.MustRunContainer(t, next, "app", harness.ContainerOptions{})
	if nodes := gpuNodes(t, c, nextCtr); !slices.Equal(nodes, []string{"nvidia1"}) {
		t.Fatalf("after containerd restart a new pod got %v, want [nvidia1]", nodes)
	}
	if h := d.holders(t); len(h) != 2 || h[0] != "annotation:"+keepCtr {
		t.Fatalf("after containerd restart ledger = %v", h)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
