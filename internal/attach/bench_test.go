package attach

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkAttachDetach is one live attach and detach of a GPU through the
// Manager, as hotgpud serves it without the API: resolve the container, a
// ledger change per step (the outcomes fsynced, the write-ahead records
// not), the cgroup v1 rule, the node in the container (on a tmpfs, as a
// container's /dev is), and the node-wide busy check after the revoke. The
// ledger is on the test's TempDir disk, as hotgpud's is on the host's.
func BenchmarkAttachDetach(b *testing.B) {
	s := newSandbox(b)
	if err := unix.Mount("tmpfs", s.root+"/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755"); err != nil {
		b.Fatalf("failed to mount a tmpfs /dev: %v", err)
	}
	b.Cleanup(func() { _ = unix.Unmount(s.root+"/dev", unix.MNT_DETACH) })
	m, _ := newManager(b, s, b.TempDir())
	target := Target{ContainerID: "c0ffee1234567890"}
	for b.Loop() {
		if _, err := m.Attach(target, []string{"1"}, 0); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Detach(target, []string{"1"}, false); err != nil {
			b.Fatal(err)
		}
	}
}
