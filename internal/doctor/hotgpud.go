package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

const hotgpudStep step = StepHotgpud

// Daemon is the part of hotgpud's API doctor uses; *api.Client is one.
type Daemon interface {
	Status(ctx context.Context) (*api.Status, error)
	GPUs(ctx context.Context) ([]api.GPUStatus, error)
	Attach(ctx context.Context, req api.AttachRequest) (*attach.Result, error)
	Detach(ctx context.Context, req api.DetachRequest) (*attach.Result, error)
}

// hotgpudChecks reaches hotgpud at socket and reads its status and ledger;
// st and gpus are nil when it cannot be reached.
func hotgpudChecks(ctx context.Context, socket string, d Daemon, now time.Time) (st *api.Status, gpus []api.GPUStatus, out []Check) {
	if c, ok := socketCheck(socket); !ok {
		return nil, nil, []Check{c}
	}
	st, err := d.Status(ctx)
	if err == nil {
		gpus, err = d.GPUs(ctx)
	}
	if err != nil {
		return nil, nil, []Check{reachCheck(socket, err)}
	}
	detail := fmt.Sprintf("hotgpud %s at %s, up %s", st.Version, socket, st.Uptime)
	if st.Simulated != "" {
		detail += ", simulating " + st.Simulated
	}
	out = append(out, hotgpudStep.ok("reachable", detail), ledgerCheck(st, gpus), kubeletCheck(st), reconcileCheck(st, now))
	return st, gpus, out
}

// socketCheck tells a missing socket from a file that is not one.
func socketCheck(socket string) (Check, bool) {
	fi, err := os.Stat(socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return hotgpudStep.fail("reachable", "no socket at "+socket+": hotgpud is not running (or listens elsewhere)",
			"start it ('systemctl start hotgpud'; its log: 'journalctl -u hotgpud'), or give its socket with --socket"), false
	case err != nil:
		return hotgpudStep.fail("reachable", err.Error(), "run doctor as root"), false
	case fi.Mode().Type() != fs.ModeSocket:
		return hotgpudStep.fail("reachable", socket+" is not a socket", "give hotgpud's API socket with --socket"), false
	}
	return Check{}, true
}

// reachCheck explains why a socket that exists did not answer.
func reachCheck(socket string, err error) Check {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return hotgpudStep.fail("reachable", "stale socket: "+socket+" exists but nothing listens on it: hotgpud stopped without removing it (it crashed or was killed)",
			"see why it stopped ('journalctl -u hotgpud'), then start it again ('systemctl start hotgpud'): it replaces the stale socket")
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return hotgpudStep.fail("reachable", "not allowed to use "+socket+": "+err.Error(),
			"run doctor as root (or as a member of the group hotgpud's api.group names)")
	}
	return hotgpudStep.fail("reachable", "hotgpud at "+socket+" did not answer: "+err.Error(), "see its log ('journalctl -u hotgpud'); restart it if it hangs")
}

// ledgerCheck counts the grants of the ledger by reason.
func ledgerCheck(st *api.Status, gpus []api.GPUStatus) Check {
	byReason := map[string]int{}
	var quarantined, unhealthy []string
	for _, g := range gpus {
		if !g.Healthy {
			unhealthy = append(unhealthy, fmt.Sprint(g.Index))
		}
		if g.Grant == nil {
			continue
		}
		byReason[string(g.Grant.Reason)]++
		if g.Grant.Reason == ledger.Quarantine {
			quarantined = append(quarantined, fmt.Sprint(g.Index))
		}
	}
	var reasons []string
	for r, n := range byReason {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(reasons)
	detail := fmt.Sprintf("%d GPU(s), %d held", len(gpus), st.Held)
	if len(reasons) > 0 {
		detail += " (" + strings.Join(reasons, ", ") + ")"
	}
	detail += fmt.Sprintf(", %d container(s) known", st.Containers)
	switch {
	case len(quarantined) > 0:
		return hotgpudStep.warn("ledger", detail+"; quarantined: GPU "+strings.Join(quarantined, ", "),
			"a process still holds a force-detached GPU: 'hotgpu ls' names it; the GPU is free again once it exits")
	case len(unhealthy) > 0:
		return hotgpudStep.warn("ledger", detail+"; unhealthy: GPU "+strings.Join(unhealthy, ", "), "'hotgpu health' says why and when they recover")
	}
	return hotgpudStep.ok("ledger", detail)
}

func kubeletCheck(st *api.Status) Check {
	switch {
	case strings.HasPrefix(st.DevicePlugin, "registered"):
		return hotgpudStep.ok("kubelet", "device plugin "+st.DevicePlugin)
	case st.DevicePlugin == "disabled":
		return hotgpudStep.ok("kubelet", "device plugin disabled (not a Kubernetes node)")
	}
	return hotgpudStep.warn("kubelet", "device plugin "+st.DevicePlugin,
		"is kubelet running? hotgpud registers as soon as kubelet's device-plugins socket appears; disable the device plugin on a node without kubelet")
}

// reconcileCheck: the periodic reconcile re-grants what was reset and
// revokes what was re-granted; one that stopped running is a hung daemon.
func reconcileCheck(st *api.Status, now time.Time) Check {
	interval, err := time.ParseDuration(st.ReconcileInterval)
	if st.LastReconcile.IsZero() {
		if up, upErr := time.ParseDuration(st.Uptime); err == nil && upErr == nil && up < 3*interval+time.Minute {
			return hotgpudStep.ok("reconcile", fmt.Sprintf("none yet: hotgpud started %s ago and reconciles every %s", up, interval))
		}
		return hotgpudStep.warn("reconcile", "no reconcile of live grants yet (hotgpud "+st.Version+", up "+st.Uptime+")",
			"a hotgpud that does not report its reconciles is older than this hotgpu, or its reconcile loop is stuck: see its log")
	}
	age := now.Sub(st.LastReconcile).Round(time.Second)
	detail := fmt.Sprintf("last reconcile %s ago (%s)", age, st.LastReconcile.Format(time.RFC3339))
	if err != nil || interval <= 0 {
		return hotgpudStep.ok("reconcile", detail)
	}
	detail += ", every " + interval.String()
	if age > 3*interval+time.Minute {
		return hotgpudStep.warn("reconcile", detail+": overdue", "hotgpud's reconcile loop seems stuck: see its log, and restart it")
	}
	return hotgpudStep.ok("reconcile", detail)
}
