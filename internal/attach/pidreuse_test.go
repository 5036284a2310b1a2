package attach

import (
	"strings"
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

// The pid is alive, but started at another time than the recorded holder:
// another process reuses the pid. Here that process is in the container's
// cgroup, so the container outlives the holder: the GPU is revoked there
// too, not left open to it while the ledger hands it out.
func TestReconcileReleasesGrantOfReusedPID(t *testing.T) {
	s := newSandbox(t)
	m, l, hook := attachByPID(t, s)
	g := l.Grants()[0]
	h := g.Holder
	h.StartTime++ // what the holder's start time would be had the pid been reused
	_, err := l.Release(h.ContainerID, g.GPU)
	must(t, err)
	must(t, l.Acquire(h, ledger.Attach, ledger.Active, g.GPU))
	if list := s.devicesList(); !strings.Contains(list, "c 195:0 rw") {
		t.Fatalf("setup: GPU 0 not granted:\n%s", list)
	}
	expectReleased(t, m, l, hook, "its pid now belongs to another process")
	if list := s.devicesList(); strings.Contains(list, "c 195:0 ") {
		t.Errorf("GPU 0 released but still allowed in the container that outlives its holder:\n%s", list)
	}
}
