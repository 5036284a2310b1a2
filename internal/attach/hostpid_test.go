package attach

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestAttachRefusesHostProcess: a pid target must be a process inside a
// container. A host process's root is the host's, so an attach would create
// /dev/nvidiaN on the host and a detach would delete the host's own node.
// Refused before anything is reserved or touched.
func TestAttachRefusesHostProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: reads /proc/1/root")
	}
	host := exec.Command("sleep", "60")
	must(t, host.Start())
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	store, err := ledger.NewFileStore(t.TempDir())
	must(t, err)
	l, err := ledger.New(store)
	must(t, err)
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := New(staticInv{testInventory()}, allHealthy{}, l, registry.New(), logrus.NewEntry(log))
	_, statErr := os.Lstat("/dev/nvidia3")
	_, err = m.Attach(Target{PID: host.Process.Pid}, []string{"3"}, 0)
	if err == nil || !strings.Contains(err.Error(), "root is the host's") {
		t.Fatalf("attach to host process %d: err = %v, want a refusal", host.Process.Pid, err)
	}
	if _, after := os.Lstat("/dev/nvidia3"); (after == nil) != (statErr == nil) {
		t.Errorf("the host's /dev/nvidia3 changed (before: %v, after: %v)", statErr, after)
	}
	if g := l.Grants(); len(g) != 0 {
		t.Errorf("refused attach left grants %v", g)
	}
	if _, err := m.Detach(Target{PID: host.Process.Pid}, nil, true); err == nil || !strings.Contains(err.Error(), "root is the host's") {
		t.Fatalf("detach from host process: err = %v, want a refusal", err)
	}
}
