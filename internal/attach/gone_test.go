package attach

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// attachByPID attaches GPU 0 to the sandbox by its pid, with a Manager that
// knows no container through NRI and logs into the returned hook.
func attachByPID(t *testing.T, s *sandbox) (*Manager, *ledger.Ledger, *logtest.Hook) {
	t.Helper()
	l := newLedger(t)
	m := managerWith(t, l)
	logger, hook := logtest.NewNullLogger()
	m.log = logrus.NewEntry(logger)
	_, err := m.Attach(Target{PID: s.proc.Process.Pid}, []string{"0"}, 0)
	must(t, err)
	if g := l.Grants(); len(g) != 1 {
		t.Fatalf("grants after attach by pid: %v", g)
	}
	return m, l, hook
}

// expectReleased checks that a reconcile pass released every grant and said
// why in the log.
func expectReleased(t *testing.T, m *Manager, l *ledger.Ledger, hook *logtest.Hook, reason string) {
	t.Helper()
	if _, err := m.Reconcile(""); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if g := l.Grants(); len(g) != 0 {
		t.Fatalf("grants after reconcile: %v, want the gone holder's released", g)
	}
	for _, e := range hook.AllEntries() {
		if e.Message == "released a GPU attached to a container that is gone" && e.Data["reason"] == reason {
			return
		}
	}
	t.Errorf("no log entry says the GPU was released because %q; got %d entries", reason, len(hook.AllEntries()))
}

func TestReconcileReleasesGrantOfExitedPID(t *testing.T) {
	s := newSandbox(t)
	m, l, hook := attachByPID(t, s)
	must(t, s.proc.Process.Kill())
	_ = s.proc.Wait()
	expectReleased(t, m, l, hook, "its process exited")
}

// The pid is alive but now in another cgroup (the container is gone and the
// pid reused by another container, or the process moved): not the holder.
func TestReconcileReleasesGrantOfPIDInOtherCgroup(t *testing.T) {
	s := newSandbox(t)
	m, l, hook := attachByPID(t, s)
	pid := strconv.Itoa(s.proc.Process.Pid)
	other := filepath.Join(devicesRoot, s.cgroup+"-other")
	must(t, os.Mkdir(other, 0o755))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(devicesRoot, s.cgroup, "cgroup.procs"), []byte(pid), 0)
		_ = os.Remove(other)
	})
	must(t, os.WriteFile(filepath.Join(other, "cgroup.procs"), []byte(pid), 0))
	expectReleased(t, m, l, hook, "its process is in another cgroup now")
}

func TestCgroupName(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for dir, want := range map[string]string{
		"/sys/fs/cgroup/devices/k8s.io/" + id:                                   id,
		"/sys/fs/cgroup/devices/kubepods.slice/cri-containerd-" + id + ".scope": id,
		"/sys/fs/cgroup/devices/system.slice/docker-" + id + ".scope":           id,
		"/sys/fs/cgroup/devices/docker/" + id:                                   id,
		"/sys/fs/cgroup/devices/abc":                                            "",
	} {
		if got := cgroupName(&hotplug.Target{DevicesDir: dir}); got != want {
			t.Errorf("cgroupName(%s) = %q, want %q", dir, got, want)
		}
	}
}
