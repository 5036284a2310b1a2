package sim

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

var (
	// ErrNotFound means the simulated GPU asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNoEvents is returned by the Inject methods when no health watcher
	// registered for events.
	ErrNoEvents = errors.New("no health watcher is registered for events")
)

// check converts an nvml.Return of the mock into nil or an error about op.
func check(ret nvml.Return, op string, args ...any) error {
	if ret == nvml.SUCCESS {
		return nil
	}
	return fmt.Errorf("failed to %s: NVML %s", fmt.Sprintf(op, args...), ret.Error())
}
