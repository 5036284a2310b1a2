package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Detach refuses a GPU that a process holds which is not directly in the
// container's cgroup: one in a sub-cgroup, and one outside the container
// that a process of the container passed the fd to (SCM_RIGHTS) before it
// exited. The device cgroup checks only open(2): a detach would leave
// either one using the GPU. Nothing changes on refusal.
func TestDetachRefusesHoldersOutsideTheCgroup(t *testing.T) {
	tests := []struct {
		name  string
		start func(t *testing.T, s *sandbox, node string) *holder
	}{
		{"sub-cgroup", func(t *testing.T, s *sandbox, node string) *holder {
			sub := subCgroup(t, s)
			return startHolder(t, node, filepath.Join(sub, "cgroup.procs"))
		}},
		{"fd passed out of the container", passedFdHolder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			m, l := newManager(t, s, t.TempDir())
			target := Target{ContainerID: "c0ffee1234567890"}
			_, err := m.Attach(target, []string{"1"}, 0)
			must(t, err)
			h := tt.start(t, s, filepath.Join(s.root, "dev", "nvidia1"))
			before, grants := s.devicesList(), l.Grants()

			_, err = m.Detach(target, []string{"1"}, false)
			if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprint(h.pid())) {
				t.Fatalf("detach while pid %d holds the GPU: err = %v; want ErrBusy naming it", h.pid(), err)
			}
			if after := s.devicesList(); after != before {
				t.Errorf("refused detach changed devices.list: %q -> %q", before, after)
			}
			if got := l.Grants(); len(got) != len(grants) || got[0] != grants[0] {
				t.Errorf("refused detach changed the ledger: %v -> %v", grants, got)
			}
			if got := s.open("/dev/nvidia1"); got != "ENXIO" {
				t.Errorf("refused detach took the GPU away: open = %s", got)
			}

			h.stop()
			if _, err := m.Detach(target, []string{"1"}, false); err != nil {
				t.Fatalf("detach after the holder exited: %v", err)
			}
		})
	}
}

// subCgroup makes a child of the sandbox's devices cgroup, which inherits
// its rules, and removes it after the processes in it are gone.
func subCgroup(t *testing.T, s *sandbox) string {
	t.Helper()
	dir := filepath.Join(devicesRoot, s.cgroup, "worker")
	must(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		for i := 0; unix.Rmdir(dir) == unix.EBUSY && i < 100; i++ {
			time.Sleep(10 * time.Millisecond) // a killed process leaves a moment after wait
		}
	})
	return dir
}
