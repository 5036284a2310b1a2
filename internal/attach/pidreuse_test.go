package attach

import (
	"testing"

	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// A holder targeted by pid records the process's cgroup and start time,
// which tell the container's process from a later one with the same pid.
func TestAttachByPIDRecordsProcess(t *testing.T) {
	s := newSandbox(t)
	_, l, _ := attachByPID(t, s)
	start, err := hotplug.StartTime(s.proc.Process.Pid)
	must(t, err)
	h := l.Grants()[0].Holder
	if h.PID != s.proc.Process.Pid || h.Cgroup != s.cgroup || h.StartTime != start {
		t.Errorf("holder %+v: want pid %d, cgroup %s, start time %d", h, s.proc.Process.Pid, s.cgroup, start)
	}
}

// The pid is alive and in the cgroup, but started at another time than the
// recorded holder: another process reuses the pid.
func TestReconcileReleasesGrantOfReusedPID(t *testing.T) {
	s := newSandbox(t)
	m, l, hook := attachByPID(t, s)
	g := l.Grants()[0]
	h := g.Holder
	h.StartTime++ // what the holder's start time would be had the pid been reused
	_, err := l.Release(h.ContainerID, g.GPU)
	must(t, err)
	must(t, l.Acquire(h, ledger.Attach, ledger.Active, g.GPU))
	expectReleased(t, m, l, hook, "its pid now belongs to another process")
}
