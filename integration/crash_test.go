package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// Crash safety. kill -9 at every step of a live attach and detach is
// TestAttachCrash (attach_test.go); kill -9 with pods running and pods going
// away meanwhile is TestNRIRestarts. Here: kill -9 inside CreateContainer,
// and a torn or garbage state file.

// TestCreateContainerCrash kills hotgpud (SIGKILL, from inside) after its NRI
// CreateContainer recorded the pod's GPU in the ledger and before it answered
// containerd. containerd goes on without the plugin, so the container runs
// without the GPU; after a restart the ledger must not keep that GPU for it
// (a leak), and the next pod gets it.
func TestCreateContainerCrash(t *testing.T) {
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	d := startHotgpudBin(t, c, buildBin(t, "./cmd/hotgpud", "hotgpu_failpoints"))
	ledgerFile := filepath.Join(d.dir, "state", "ledger.json")
	d.stop()
	d.env = []string{"HOTGPU_FAILPOINT=create-recorded"}
	d.start()

	pod := c.MustRunPod(t, "dies", map[string]string{"gpus.hotgpu.dev/container.app": "1"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	ctr, cerr := c.CRI().RunContainer(ctx, pod, "app", harness.ContainerOptions{})
	cancel()
	if err := d.waitExit(15 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("hotgpud did not die in CreateContainer: %v", err)
	}
	if s := readFile(t, ledgerFile); !strings.Contains(s, `"annotation"`) {
		t.Fatalf("the failpoint fired before the grant was recorded; ledger:\n%s", s)
	}
	t.Logf("containerd's answer to CreateContainer while the plugin died: %v", cerr)

	d.env = nil
	d.start()
	if cerr == nil { // containerd created it without the plugin: no GPU
		if n := append(gpuNodes(t, c, ctr), controlNodes(t, c, ctr)...); len(n) != 0 {
			t.Fatalf("container created while hotgpud died has %v", n)
		}
		if strings.Contains(devicesList(t, c, ctr), "c 195:") {
			t.Errorf("container created while hotgpud died has a GPU rule:\n%s", devicesList(t, c, ctr))
		}
	}
	if h := waitHolders(t, d, map[int]string{}); len(h) != 0 {
		t.Fatalf("after the crash and a restart the ledger keeps %v for a container that has no GPU", h)
	}
	next := c.MustRunPod(t, "next", map[string]string{"gpus.hotgpu.dev/container.app": "1"})
	nextCtr := c.MustRunContainer(t, next, "app", harness.ContainerOptions{})
	if n := gpuNodes(t, c, nextCtr); !slices.Equal(n, []string{"nvidia0"}) {
		t.Fatalf("next pod got %v, want [nvidia0]: the GPU leaked", n)
	}
}

// TestLedgerTornWrite: the state file is truncated, then replaced by garbage,
// while hotgpud is down and a pod holds GPUs 0 and 1. hotgpud starts anyway,
// keeps the bad file for a post-mortem, says so in its log, and re-records
// the pod's GPUs from the live container (NRI Synchronize) before it is
// ready: never a silently empty ledger that would hand them out again.
// The live-attached GPU of a second pod is only in its cgroup; it comes back
// from there (attach.Adopt).
func TestLedgerTornWrite(t *testing.T) {
	env := startEnv(t)
	c, d := env.c, env.d
	pod := c.MustRunPod(t, "torn", map[string]string{"gpus.hotgpu.dev/container.app": "2"})
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	// A second pod got GPU 2 by live attach: that grant is in its cgroup only.
	live := c.MustRunPod(t, "torn-live", nil)
	liveCtr := c.MustRunContainer(t, live, "app", harness.ContainerOptions{})
	if _, stderr, code := cli(t, d, "attach", "--pod", harness.PodNamespace+"/torn-live", "--gpu", "2"); code != 0 {
		t.Fatalf("attach: %s", stderr)
	}
	want := map[int]string{0: "annotation:" + ctr, 1: "annotation:" + ctr, 2: "attach:" + liveCtr}
	if h := d.holders(t); !equalHolders(h, want) {
		t.Fatalf("ledger = %v, want %v", h, want)
	}
	stateDir := filepath.Join(d.dir, "state")
	ledgerFile := filepath.Join(stateDir, "ledger.json")
	for _, tc := range []struct {
		name    string
		corrupt func(good []byte) []byte
	}{
		{"truncated", func(good []byte) []byte { return good[:len(good)/2] }},
		{"garbage", func([]byte) []byte { return []byte("\x00\x17not json at all{{{") }},
		{"empty", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.kill9()
			good, err := os.ReadFile(ledgerFile)
			must(t, err)
			must(t, os.WriteFile(ledgerFile, tc.corrupt(good), 0o600))
			asideBefore, _ := filepath.Glob(ledgerFile + ".corrupt-*")
			d.start()
			if h := waitHolders(t, d, want); !equalHolders(h, want) {
				t.Fatalf("after a %s state file and a restart, ledger = %v, want %v re-recorded from the running pod", tc.name, h, want)
			}
			aside, _ := filepath.Glob(ledgerFile + ".corrupt-*")
			if len(aside) != len(asideBefore)+1 {
				t.Errorf("want the corrupt state file kept aside: before %v, after %v", asideBefore, aside)
			}
			if log := readFile(t, filepath.Join(d.dir, "hotgpud.log")); !strings.Contains(log, "corrupt") {
				t.Errorf("hotgpud did not log the corrupt state file")
			}
			other := c.MustRunPod(t, "after-"+tc.name, map[string]string{"gpus.hotgpu.dev/container.app": "1"})
			otherCtr := c.MustRunContainer(t, other, "app", harness.ContainerOptions{})
			if n := gpuNodes(t, c, otherCtr); len(n) != 1 || n[0] == "nvidia0" || n[0] == "nvidia1" || n[0] == "nvidia2" {
				t.Fatalf("a new pod got %v while the running pods hold nvidia0, nvidia1 and (live) nvidia2", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			must(t, c.CRI().StopPod(ctx, other))
			must(t, c.CRI().RemovePod(ctx, other))
		})
	}
	if n := gpuNodes(t, c, ctr); !slices.Equal(n, []string{"nvidia0", "nvidia1"}) {
		t.Fatalf("the running pod lost its GPUs: %v", n)
	}
	if got := openIn(t, c, liveCtr, "/dev/nvidia2"); got != "ENXIO" {
		t.Fatalf("the live-attached GPU: open = %s, want ENXIO", got)
	}
}

func equalHolders(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitHolders polls the ledger until it equals want or 10s pass (the first
// NRI Synchronize runs just after hotgpud reports NRI connected), and
// returns the last one read.
func waitHolders(t *testing.T, d *hotgpud, want map[int]string) map[int]string {
	t.Helper()
	var h map[int]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if h = d.holders(t); equalHolders(h, want) {
			break
		}
	}
	return h
}
