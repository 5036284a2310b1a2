package nvml

import (
	"errors"
	"fmt"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Sentinel errors for the NVML results callers act on; check them with
// errors.Is. Every error from this package that comes from an NVML call wraps
// one of them when one applies.
var (
	// ErrNVMLMissing means libnvidia-ml.so.1 could not be found or loaded.
	ErrNVMLMissing = errors.New("NVIDIA management library (libnvidia-ml.so.1) not found")
	// ErrDriverNotLoaded means the library loaded but the kernel driver is not running.
	ErrDriverNotLoaded = errors.New("NVIDIA kernel driver is not loaded")
	// ErrNotFound means the GPU, MIG device or link asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotSupported means the GPU or driver does not support the query.
	ErrNotSupported = errors.New("not supported by this GPU or driver")
	// ErrNoPermission means NVML refused the call for lack of privileges.
	ErrNoPermission = errors.New("insufficient permissions")
	// ErrGPULost means the GPU fell off the bus or stopped answering.
	ErrGPULost = errors.New("GPU is lost")
	// ErrVersionMismatch means libnvidia-ml and the loaded kernel module come
	// from different driver versions (a driver upgraded without a reboot).
	ErrVersionMismatch = errors.New("NVIDIA driver/library version mismatch")
	// ErrClosed means the Provider was used after Close.
	ErrClosed = errors.New("NVML provider is closed")
)

// sentinels maps the NVML results callers branch on to sentinel errors.
var sentinels = map[nvml.Return]error{
	nvml.ERROR_LIBRARY_NOT_FOUND:       ErrNVMLMissing,
	nvml.ERROR_DRIVER_NOT_LOADED:       ErrDriverNotLoaded,
	nvml.ERROR_NOT_FOUND:               ErrNotFound,
	nvml.ERROR_NOT_SUPPORTED:           ErrNotSupported,
	nvml.ERROR_FUNCTION_NOT_FOUND:      ErrNotSupported,
	nvml.ERROR_NO_PERMISSION:           ErrNoPermission,
	nvml.ERROR_GPU_IS_LOST:             ErrGPULost,
	nvml.ERROR_LIB_RM_VERSION_MISMATCH: ErrVersionMismatch,
}

// brokenGPU are the results with which one GPU, and only that GPU, stops
// answering: NVML still counts it and the others work. A GPU that fell off
// the bus answers GPU_IS_LOST on most drivers and Unknown Error on some.
var brokenGPU = []nvml.Return{
	nvml.ERROR_GPU_IS_LOST, nvml.ERROR_UNKNOWN, nvml.ERROR_RESET_REQUIRED,
	nvml.ERROR_IRQ_ISSUE, nvml.ERROR_INSUFFICIENT_POWER,
}

// isBroken reports whether err says that the GPU it came from is broken
// (see brokenGPU), as opposed to a question the GPU cannot answer.
func isBroken(err error) bool {
	var e *Error
	return errors.As(err, &e) && slices.Contains(brokenGPU, e.code)
}

// Error is a failed NVML call. It keeps the operation and NVML's own result
// name so logs say exactly what the driver answered.
type Error struct {
	Op     string // what hotgpu was doing, e.g. "get UUID of GPU 3"
	Result string // NVML's name for the result, e.g. "ERROR_GPU_IS_LOST"
	code   nvml.Return
}

func (e *Error) Error() string { return fmt.Sprintf("failed to %s: NVML %s", e.Op, e.Result) }

// Is makes errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.code]
	return ok && s == target
}

// check converts an nvml.Return into nil or an *Error describing op.
func check(ret nvml.Return, op string, args ...any) error {
	if ret == nvml.SUCCESS {
		return nil
	}
	return &Error{Op: fmt.Sprintf(op, args...), Result: ret.Error(), code: ret}
}
