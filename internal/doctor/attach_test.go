package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// requireCgroups skips unless the attach test can make its sandbox here.
func requireCgroups(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "the attach test makes a cgroup, a mount namespace and a chroot")
	if !isFS(filepath.Join(DefaultCgroupRoot, "devices"), cgroupV1Magic) && !isFS(DefaultCgroupRoot, cgroupV2Magic) {
		testenv.Skipf(t, "needs cgroups mounted at %s", DefaultCgroupRoot)
	}
}

// leftovers lists what a sandbox of this process could have left behind.
func leftovers(t *testing.T) []string {
	t.Helper()
	var left []string
	for _, pattern := range []string{
		filepath.Join(DefaultCgroupRoot, "devices", "hotgpu-doctor-*"),
		filepath.Join(DefaultCgroupRoot, "hotgpu-doctor-*"),
		filepath.Join(os.TempDir(), "hotgpu-doctor-*"),
	} {
		m, err := filepath.Glob(pattern)
		must(t, err)
		left = append(left, m...)
	}
	return left
}

func grants(t *testing.T, c *api.Client) map[string]string {
	t.Helper()
	gpus, err := c.GPUs(context.Background())
	must(t, err)
	return ledgerState(gpus)
}

func TestAttachTestRealCgroups(t *testing.T) {
	requireCgroups(t)
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			cfg := startHotgpud(t, preset)
			c := api.NewClient(cfg.API.Socket)
			before := leftovers(t)
			r := Run(context.Background(), Config{Inventory: simulated(t, preset, nil), Socket: cfg.API.Socket, Daemon: c,
				CDIDir: t.TempDir(), AttachTest: true, SandboxArgv: []string{os.Args[0]}})
			sandbox := find(t, r.Checks, StepAttachTest, "sandbox")
			expect(t, sandbox, OK, "private tmpfs")
			if isFS(DefaultCgroupRoot, cgroupV2Magic) {
				expect(t, find(t, r.Checks, StepAttachTest, "attach"), Warn, "cgroup v2")
			} else {
				expect(t, find(t, r.Checks, StepAttachTest, "attach"), OK, "attached live", "GPU 0")
				expect(t, find(t, r.Checks, StepAttachTest, "open"), OK, "/dev/nvidia0", "ENXIO")
				expect(t, find(t, r.Checks, StepAttachTest, "detach"), OK)
				expect(t, find(t, r.Checks, StepAttachTest, "revoked"), OK, "EPERM")
			}
			expect(t, find(t, r.Checks, StepAttachTest, "cleanup"), OK, "ledger is as before (0 grant(s))")
			if r.Failed {
				t.Errorf("the attach test fails on a healthy node:\n%s", dump(r.Checks))
			}
			if g := grants(t, c); len(g) != 0 {
				t.Errorf("grants left in the ledger: %v", g)
			}
			if after := leftovers(t); len(after) != len(before) {
				t.Errorf("left behind: %v (before: %v)", after, before)
			}
		})
	}
}

// TestAttachTestKeepsOtherGrants: a GPU held by a container is not taken,
// and its grant is still there, unchanged, afterwards.
func TestAttachTestKeepsOtherGrants(t *testing.T) {
	requireCgroups(t)
	if isFS(DefaultCgroupRoot, cgroupV2Magic) {
		testenv.Skip(t, "needs a cgroup v1 devices hierarchy: hotgpud refuses a sandbox on cgroup v2")
	}
	cfg := startHotgpud(t, "pcie8")
	c := api.NewClient(cfg.API.Socket)
	holder, err := startSandbox([]string{os.Args[0]}, DefaultCgroupRoot, fmt.Sprintf("hotgpu-doctor-%d-holder", os.Getpid()))
	must(t, err)
	t.Cleanup(func() { must(t, holder.close()) })
	_, err = c.Attach(context.Background(), api.AttachRequest{Target: attach.Target{PID: holder.pid()}, IDs: []string{"0"}})
	must(t, err)
	held := grants(t, c)

	r := Run(context.Background(), Config{Inventory: simulated(t, "pcie8", nil), Socket: cfg.API.Socket, Daemon: c,
		CDIDir: t.TempDir(), AttachTest: true, SandboxArgv: []string{os.Args[0]}})
	expect(t, find(t, r.Checks, StepAttachTest, "attach"), OK, "GPU 1")
	expect(t, find(t, r.Checks, StepAttachTest, "cleanup"), OK, "(1 grant(s))")
	if after := grants(t, c); len(after) != 1 || after[firstKey(held)] != held[firstKey(held)] {
		t.Errorf("the holder's grant changed: %v, was %v", after, held)
	}
	_, err = c.Detach(context.Background(), api.DetachRequest{Target: attach.Target{PID: holder.pid()}, All: true})
	must(t, err)
}

func firstKey(m map[string]string) string {
	for k := range m {
		return k
	}
	return ""
}

// lazyDaemon answers detach without detaching: a hotgpud that does not
// revoke. The attach test must catch it.
type lazyDaemon struct{ *api.Client }

func (lazyDaemon) Detach(context.Context, api.DetachRequest) (*attach.Result, error) {
	return &attach.Result{}, nil
}

func TestAttachTestCatchesADetachThatDoesNotRevoke(t *testing.T) {
	requireCgroups(t)
	if isFS(DefaultCgroupRoot, cgroupV2Magic) {
		testenv.Skip(t, "needs a cgroup v1 devices hierarchy: hotgpud refuses a sandbox on cgroup v2")
	}
	cfg := startHotgpud(t, "dgxa100")
	c := api.NewClient(cfg.API.Socket)
	r := Run(context.Background(), Config{Inventory: simulated(t, "dgxa100", nil), Socket: cfg.API.Socket, Daemon: lazyDaemon{c},
		CDIDir: t.TempDir(), AttachTest: true, SandboxArgv: []string{os.Args[0]}})
	if !r.Failed {
		t.Fatalf("a detach that revokes nothing passes:\n%s", dump(r.Checks))
	}
	expect(t, find(t, r.Checks, StepAttachTest, "node removed"), Fail, "ENXIO")
	expect(t, find(t, r.Checks, StepAttachTest, "revoked"), Fail, "still allows")
	expect(t, find(t, r.Checks, StepAttachTest, "cleanup"), Fail, "the ledger changed")
}

func TestFreeGPU(t *testing.T) {
	gpus := make([]api.GPUStatus, 4)
	for i := range gpus {
		gpus[i].Index, gpus[i].Healthy = i, true
	}
	gpus[0].Grant = &ledger.Grant{Reason: ledger.Attach}
	gpus[1].Healthy = false
	gpus[2].MIGEnabled = true
	if g, ok := freeGPU(gpus); !ok || g.Index != 3 {
		t.Errorf("freeGPU = %d, %v; want 3, the free healthy one with MIG off", g.Index, ok)
	}
	gpus[3].Lost = "GPU is lost"
	if g, ok := freeGPU(gpus); !ok || g.Index != 2 {
		t.Errorf("freeGPU = %d, %v; want 2, the only free one left", g.Index, ok)
	}
	gpus[2].Grant = &ledger.Grant{Reason: ledger.Attach}
	if _, ok := freeGPU(gpus); ok {
		t.Error("freeGPU found a GPU where none is free")
	}
}

// refusingDaemon refuses every attach, as hotgpud refuses a process whose
// cgroup v2 device rules it cannot read.
type refusingDaemon struct{ Daemon }

func (refusingDaemon) Attach(context.Context, api.AttachRequest) (*attach.Result, error) {
	return nil, &api.StatusError{Code: 422, Msg: "refusing pid 42: a cgroup v2 device program must keep the container's own devices"}
}

func TestAttachRefused(t *testing.T) {
	g := simulated(t, "pcie8", nil).GPUs[0]
	for _, v2 := range []bool{false, true} {
		attached, cs := attachAndOpen(context.Background(), refusingDaemon{}, &sandbox{v2: v2}, g, attach.Target{PID: 42})
		if attached || len(cs) != 1 {
			t.Fatalf("v2=%v: attached=%v, checks\n%s", v2, attached, dump(cs))
		}
		if v2 {
			expect(t, cs[0], Warn, "refused", "cgroup v2", "expected on cgroup v2")
		} else {
			expect(t, cs[0], Fail, "could not attach", "journalctl")
		}
	}
}
