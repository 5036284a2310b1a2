package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// Isolation on the real containerd. What other tests already prove is not
// repeated here:
//   - CVE-2021-1056 (a container given GPU 0, with CAP_MKNOD, makes a node
//     for another GPU: EPERM): TestNRIInjection ("annotation gets exactly its
//     GPUs") for injected GPUs, testAttachPod and testAttachCtrPID (TestAttach)
//     after a live detach.
//   - annotation from a namespace not allowed, and annotation values that
//     name paths, are refused and change nothing: TestNRIInjection ("bad
//     requests fail creation and change nothing").
//   - symlinks inside the container (/dev/nvidiaN, /dev/nvidiactl, /dev
//     itself) never make hotgpu touch the host: testAttachSymlinks (TestAttach).
//
// Not here: a CDI device for pod A's GPU in pod B's CRI request. Only kubelet
// fills that field (from the device plugin's Allocate, which refuses GPUs
// held by others), and containerd 2.2 does not hand it to NRI plugins, so
// hotgpu cannot refuse it at creation (docs/security.md, "Known gaps").

// seedGrant is one grant written into hotgpud's state file while it is down,
// as the device plugin's Allocate records a kubelet allocation.
type seedGrant struct {
	GPU    string            `json:"gpu"`
	Holder map[string]string `json:"holder"`
	Reason string            `json:"reason"`
	State  string            `json:"state"`
	Since  time.Time         `json:"since"`
}

func writeLedger(t *testing.T, d *hotgpud, grants ...seedGrant) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"version": 1, "grants": grants})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(d.dir, "state", "ledger.json"), b, 0o600))
}

// TestKubeletGPUStaysWithItsPod: kubelet gave GPU 5 to pod A (recorded in the
// ledger for A's UID, as the device plugin and the NRI plugin do). No other
// pod can take it by any path — env, CDI device, annotation, live attach — and
// pod A gets it.
func TestKubeletGPUStaysWithItsPod(t *testing.T) {
	env := startEnv(t)
	c, d := env.c, env.d
	ctx := context.Background()
	uidA := "uid-a-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	podA, err := c.CRI().RunPod(ctx, "kube-a", harness.PodNamespace, uidA, nil)
	must(t, err)
	t.Cleanup(func() { _ = c.CRI().StopPod(ctx, podA); _ = c.CRI().RemovePod(ctx, podA) })
	uuid5 := d.uuid(t, 5)

	d.kill9()
	writeLedger(t, d, seedGrant{GPU: uuid5, Holder: map[string]string{"podUID": uidA}, Reason: "kubelet", State: "active", Since: time.Now().UTC()})
	d.start()
	if h := d.holders(t); h[5] != "kubelet:" {
		t.Fatalf("seeded kubelet allocation not kept across the restart: %v", h)
	}

	podB := c.MustRunPod(t, "kube-b", map[string]string{"gpus.hotgpu.dev/container.app": uuid5})
	for _, tc := range []struct {
		name string
		o    harness.ContainerOptions
		want string
	}{
		{"annotation", harness.ContainerOptions{}, "held by"},
		{"env by index", harness.ContainerOptions{Env: map[string]string{"HOTGPU_VISIBLE_DEVICES": "5"}}, "did not allocate to this pod"},
		{"env by UUID", harness.ContainerOptions{Env: map[string]string{"HOTGPU_VISIBLE_DEVICES": uuid5}}, "did not allocate to this pod"},
		{"env path trick", harness.ContainerOptions{Env: map[string]string{"HOTGPU_VISIBLE_DEVICES": "../../../dev/nvidia5"}}, "is not a GPU index or UUID"},
		{"CDI path trick", harness.ContainerOptions{CDIDevices: []string{"nvidia.com/gpu=../../dev/nvidia5"}}, "unresolvable CDI devices"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			pod := podB
			if tc.name != "annotation" { // the annotation would be refused first
				pod = c.MustRunPod(t, "kube-b-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			}
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := c.CRI().RunContainer(cctx, pod, "app", o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pod B took kubelet's GPU of pod A by %s: err = %v, want a refusal containing %q", tc.name, err, tc.want)
			}
			if h := d.holders(t); len(h) != 1 || h[5] != "kubelet:" {
				t.Fatalf("refused request changed the ledger: %v", h)
			}
		})
	}

	plain := c.MustRunPod(t, "kube-live", nil)
	plainCtr := c.MustRunContainer(t, plain, "app", harness.ContainerOptions{})
	if _, stderr, code := cli(t, d, "attach", "--pod", harness.PodNamespace+"/kube-live", "--gpu", "5"); code == 0 || !strings.Contains(stderr, "held by") {
		t.Fatalf("live attach of pod A's kubelet GPU to another pod: exit %d, %q", code, stderr)
	}
	if n := gpuNodes(t, c, plainCtr); len(n) != 0 {
		t.Fatalf("refused attach left %v in the container", n)
	}

	ctrA := c.MustRunContainer(t, podA, "app", harness.ContainerOptions{Env: map[string]string{"HOTGPU_VISIBLE_DEVICES": uuid5}})
	if n := gpuNodes(t, c, ctrA); !slices.Equal(n, []string{"nvidia5"}) {
		t.Fatalf("pod A's container got %v, want [nvidia5]", n)
	}
	if h := d.holders(t); h[5] != "kubelet:"+ctrA {
		t.Fatalf("ledger = %v, want GPU 5 claimed by pod A's container %s", h, ctrA)
	}
	checkNoWildcard(t, c, ctrA)
	if got := openIn(t, c, ctrA, "/dev/nvidia5"); got != "ENXIO" {
		t.Errorf("pod A open /dev/nvidia5 = %s, want ENXIO (allowed, no driver)", got)
	}
	if _, stderr, code := cli(t, d, "detach", "--pod", harness.PodNamespace+"/kube-a", "--gpu", "5"); code == 0 || !strings.Contains(stderr, "kubelet") {
		t.Errorf("live detach of a kubelet GPU: exit %d, %q; want a refusal (kubelet would hand it out again)", code, stderr)
	}
}

// checkNoWildcard fails when the container's device cgroup grants read or
// write on every device or on every minor of the NVIDIA major. runc's own
// base rules stay: "c *:* m" and "b *:* m" (mknod only) and "c 136:* rwm"
// (its /dev/pts).
func checkNoWildcard(t *testing.T, c *harness.Containerd, ctr string) {
	t.Helper()
	for _, line := range strings.Split(devicesList(t, c, ctr), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.ContainsAny(f[2], "rw") {
			continue
		}
		if f[0] == "a" || strings.HasPrefix(f[1], "*:") || f[1] == "195:*" {
			t.Errorf("container %s has wildcard rule %q", ctr, line)
		}
	}
}

// TestAttachRefusesHostProcess: `hotgpu attach --pid` of a process that is
// not in a container (its root is the host's) is refused: an attach would
// create nodes in the host's /dev and a detach would delete the host's own.
func TestAttachRefusesHostProcess(t *testing.T) {
	env := startEnv(t)
	host := exec.Command("sleep", "300")
	must(t, host.Start())
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	before := hostNodes(t)
	for _, args := range [][]string{
		{"attach", "--pid", strconv.Itoa(host.Process.Pid), "--gpu", "3"},
		{"detach", "--pid", strconv.Itoa(host.Process.Pid), "--all"},
	} {
		_, stderr, code := cli(t, env.d, args...)
		if code == 0 || !strings.Contains(stderr, "root is the host's") {
			t.Errorf("hotgpu %s: exit %d, %q; want a refusal", strings.Join(args, " "), code, stderr)
		}
	}
	if after := hostNodes(t); !slices.Equal(after, before) {
		t.Errorf("host /dev changed: %v -> %v", before, after)
	}
	if h := env.d.holders(t); len(h) != 0 {
		t.Errorf("refused attach left the ledger %v", h)
	}
}

func hostNodes(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob("/dev/nvidia*")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return m
}
