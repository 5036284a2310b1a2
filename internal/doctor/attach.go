package doctor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

const attachStep step = StepAttachTest

// attachTest gives a free GPU to a throwaway sandbox through hotgpud's API,
// opens it there, takes it back, checks the device cgroup refuses it again,
// and checks that the sandbox, its cgroup and its grant are all gone.
// argv starts the running binary (its SandboxArg runs SandboxMain).
func attachTest(ctx context.Context, d Daemon, gpus []api.GPUStatus, argv []string, cgroupRoot string) []Check {
	if d == nil {
		return []Check{attachStep.skip("attach", "hotgpud is not reachable (see the hotgpud step)")}
	}
	g, ok := freeGPU(gpus)
	if !ok {
		return []Check{attachStep.warn("attach", "no free healthy GPU to test with: every GPU is held or unhealthy", "run it again when one is free ('hotgpu ls')")}
	}
	before := ledgerState(gpus)
	sb, err := startSandbox(argv, cgroupRoot, fmt.Sprintf("hotgpu-doctor-%d", os.Getpid()))
	if err != nil {
		return []Check{attachStep.fail("sandbox", err.Error(), "run doctor as root on the host, with /sys/fs/cgroup mounted")}
	}
	out := []Check{attachStep.ok("sandbox", fmt.Sprintf("pid %d in cgroup %s, root a private tmpfs", sb.pid(), sb.cgroup))}
	target := attach.Target{PID: sb.pid()}
	attached, checks := attachAndOpen(ctx, d, sb, g, target)
	out = append(out, checks...)
	if attached {
		detached, checks := detachAndRefuse(ctx, d, sb, g, target)
		out = append(out, checks...)
		if !detached { // the check said why; take it back anyway
			_, _ = d.Detach(ctx, api.DetachRequest{Target: target, All: true, Force: true})
		}
	}
	return append(out, cleanupCheck(ctx, d, sb, before))
}

// freeGPU picks a GPU nobody holds, healthy, MIG off if one is.
func freeGPU(gpus []api.GPUStatus) (gpu.GPU, bool) {
	var found []gpu.GPU
	for _, g := range gpus {
		if g.Grant == nil && g.Healthy && g.Lost == "" {
			found = append(found, g.GPU)
		}
	}
	if len(found) == 0 {
		return gpu.GPU{}, false
	}
	if i := slices.IndexFunc(found, func(g gpu.GPU) bool { return !g.MIGEnabled }); i >= 0 {
		return found[i], true
	}
	return found[0], true
}

// ledgerState is each GPU's holder, to compare before and after.
func ledgerState(gpus []api.GPUStatus) map[string]string {
	m := map[string]string{}
	for _, g := range gpus {
		if g.Grant != nil {
			m[g.UUID] = fmt.Sprintf("%s %s %s", g.Grant.Holder.ContainerID, g.Grant.Reason, g.Grant.State)
		}
	}
	return m
}

func attachAndOpen(ctx context.Context, d Daemon, sb *sandbox, g gpu.GPU, target attach.Target) (bool, []Check) {
	path := g.Node().Path
	res, err := d.Attach(ctx, api.AttachRequest{Target: target, IDs: []string{g.UUID}})
	if err != nil {
		if sb.v2 {
			return false, []Check{attachStep.warn("attach", fmt.Sprintf("hotgpud refused GPU %d for the sandbox on cgroup v2: %v", g.Index, err),
				"expected on cgroup v2: hotgpud keeps a process's own device rules and reads them only from NRI or a containerd bundle, which the sandbox has not; test attach on a real container ('hotgpu attach --pid')")}
		}
		return false, []Check{attachStep.fail("attach", fmt.Sprintf("hotgpud could not attach GPU %d (%s) to the sandbox: %v", g.Index, g.UUID, err), "see hotgpud's log ('journalctl -u hotgpud')")}
	}
	out := []Check{attachStep.ok("attach", fmt.Sprintf("GPU %d (%s) attached live to the sandbox as %s", g.Index, g.UUID, res.Holder.ContainerID))}
	switch got := sb.open(path); got {
	case "ok":
		out = append(out, attachStep.ok("open", path+" opens in the sandbox: the driver answers"))
	case "ENXIO":
		out = append(out, attachStep.ok("open", path+" is allowed in the sandbox (ENXIO: no driver behind the node, as on a simulated node)"))
	default:
		out = append(out, attachStep.fail("open", fmt.Sprintf("opening %s in the sandbox after attach gave %s", path, got), "the grant did not reach the device cgroup or the node was not made: see hotgpud's log"))
	}
	return true, out
}

func detachAndRefuse(ctx context.Context, d Daemon, sb *sandbox, g gpu.GPU, target attach.Target) (bool, []Check) {
	node := g.Node()
	if _, err := d.Detach(ctx, api.DetachRequest{Target: target, IDs: []string{g.UUID}}); err != nil {
		return false, []Check{attachStep.fail("detach", fmt.Sprintf("hotgpud could not detach GPU %d from the sandbox: %v", g.Index, err), "see hotgpud's log ('journalctl -u hotgpud')")}
	}
	out := []Check{attachStep.ok("detach", fmt.Sprintf("GPU %d detached", g.Index))}
	got := sb.open(node.Path)
	if got != "ENOENT" {
		out = append(out, attachStep.fail("node removed", fmt.Sprintf("opening %s after detach gave %s, want ENOENT: the node hotgpu made is still there", node.Path, got), "see hotgpud's log"))
	} else {
		// A node made by the sandbox itself: only the device cgroup
		// stands between it and the GPU now.
		if err := sb.mknod(node.Path, node.Major, node.Minor); err != nil {
			return true, append(out, attachStep.fail("revoked", "failed to make a node in the sandbox: "+err.Error(), "report it"))
		}
		got = sb.open(node.Path)
	}
	if got != "EPERM" {
		return true, append(out, attachStep.fail("revoked", fmt.Sprintf("opening %s (%d:%d) in the sandbox after detach gave %s, want EPERM: the device cgroup still allows the GPU", node.Path, node.Major, node.Minor, got),
			"hotgpud did not revoke the grant: see its log, and report it"))
	}
	return true, append(out, attachStep.ok("revoked", fmt.Sprintf("the device cgroup refuses %d:%d again (EPERM)", node.Major, node.Minor)))
}

// cleanupCheck ends the sandbox and checks nothing is left: its process,
// its cgroup, its root, its grant.
func cleanupCheck(ctx context.Context, d Daemon, sb *sandbox, before map[string]string) Check {
	pid := sb.pid()
	var left []string
	if err := sb.close(); err != nil {
		left = append(left, err.Error())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		left = append(left, fmt.Sprintf("process %d still exists", pid))
	}
	for _, p := range []string{sb.cgroup, sb.root} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			left = append(left, p+" still exists")
		}
	}
	gpus, err := d.GPUs(ctx)
	if err != nil {
		left = append(left, "failed to read the ledger again: "+err.Error())
	} else if after := ledgerState(gpus); !maps.Equal(before, after) {
		left = append(left, "the ledger changed: "+ledgerDiff(before, after))
	}
	if len(left) > 0 {
		return attachStep.fail("cleanup", strings.Join(left, "; "), "remove what is left by hand; 'hotgpu ls' shows the ledger (something else may have attached meanwhile)")
	}
	return attachStep.ok("cleanup", fmt.Sprintf("sandbox process, cgroup and root removed; the ledger is as before (%d grant(s))", len(before)))
}

func ledgerDiff(before, after map[string]string) string {
	var d []string
	for _, uuid := range slices.Sorted(maps.Keys(after)) {
		if before[uuid] != after[uuid] {
			d = append(d, fmt.Sprintf("%s now %q, was %q", uuid, after[uuid], before[uuid]))
		}
	}
	for _, uuid := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[uuid]; !ok {
			d = append(d, fmt.Sprintf("%s released, was %q", uuid, before[uuid]))
		}
	}
	return strings.Join(d, ", ")
}
