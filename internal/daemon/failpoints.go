//go:build hotgpu_failpoints

package daemon

import (
	"os"
	"syscall"
)

// In builds with the hotgpu_failpoints tag (the integration suite's, never a
// release), HOTGPU_FAILPOINT=<step> makes hotgpud SIGKILL itself when an
// attach or detach reaches that step ("reserved", "granted", "revoked",
// "removed") or the NRI plugin's CreateContainer reaches
// "create-recorded": a crash at the worst moment, on demand.
func init() {
	step := os.Getenv("HOTGPU_FAILPOINT")
	if step == "" {
		return
	}
	failpoint = func(at string) error {
		if at == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way; never take another step
		}
		return nil
	}
}
