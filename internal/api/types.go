// Package api is hotgpud's local control API: versioned HTTP/JSON on a
// unix socket that only root (or one configured group) may use. It serves
// attach, detach, the list of GPUs and their holders, and status. The server
// checks the caller's kernel credentials (SO_PEERCRED) on every connection,
// not just the socket's file mode. Client is what the hotgpu CLI uses.
package api

import (
	"time"

	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// DefaultSocket is hotgpud's API socket unless configured otherwise.
const DefaultSocket = "/run/hotgpu/hotgpu.sock"

// Version prefixes every path: /v1/attach, /v1/detach, /v1/gpus, /v1/status.
const Version = "v1"

// AttachRequest asks for GPUs in a running container: IDs (indices, UUIDs,
// MIG device names "0:1" or MIG UUIDs) or a Count of hotgpu's choosing:
// whole GPUs, or MIG devices of MIGProfile ("1g.5gb") when it is set.
type AttachRequest struct {
	Target     attach.Target `json:"target"`
	IDs        []string      `json:"ids,omitempty"`
	Count      int           `json:"count,omitempty"`
	MIGProfile string        `json:"migProfile,omitempty"`
}

// DetachRequest takes GPUs away: IDs, or every detachable GPU when All.
type DetachRequest struct {
	Target attach.Target `json:"target"`
	IDs    []string      `json:"ids,omitempty"`
	All    bool          `json:"all,omitempty"`
	Force  bool          `json:"force,omitempty"`
}

// GPUStatus is one row of `hotgpu ls`.
type GPUStatus struct {
	gpu.GPU
	Healthy bool          `json:"healthy"`
	Grant   *ledger.Grant `json:"grant,omitempty"`
}

// Status is the daemon's state in brief.
type Status struct {
	Version       string `json:"version"`
	Simulated     string `json:"simulated,omitempty"`
	DriverVersion string `json:"driverVersion"`
	CUDAVersion   string `json:"cudaVersion"`
	GPUs          int    `json:"gpus"`
	Held          int    `json:"held"`
	Unhealthy     int    `json:"unhealthy"`
	Containers    int    `json:"containers"`
	NRIConnected  bool   `json:"nriConnected"`
	// DevicePlugin is "disabled", "waiting for kubelet" or "registered as <resource>".
	DevicePlugin string `json:"devicePlugin"`
	CDISpec      string `json:"cdiSpec,omitempty"`
	Uptime       string `json:"uptime"`
	// LastReconcile is when the last full reconcile of live grants ended
	// (zero before the first); ReconcileInterval is how often one runs.
	LastReconcile     time.Time `json:"lastReconcile,omitzero"`
	ReconcileInterval string    `json:"reconcileInterval,omitempty"`
	// Problems are what needs an operator: held MIG devices a MIG layout
	// change destroyed.
	Problems []string `json:"problems,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// HookReserveRequest is what hotgpu-hook sends when a runtime without NRI
// creates a container that asks for GPUs: the container (its OCI id, the pid
// of its init and its cgroup) and the GPUs it named. hotgpud checks them
// against the ledger and records them with reason "hook" before the hook
// touches the container.
type HookReserveRequest struct {
	ContainerID string   `json:"containerID"`
	PID         int      `json:"pid"`
	Cgroup      string   `json:"cgroup,omitempty"`
	IDs         []string `json:"ids,omitempty"`
	// All asks for every GPU; the hook sends it only when its own
	// configuration allows "all".
	All bool `json:"all,omitempty"`
}

// HookReservation is hotgpud's answer: the GPUs now held for the container
// and the control nodes it needs besides them.
type HookReservation struct {
	GPUs    []gpu.GPU        `json:"gpus"`
	Control []gpu.DeviceNode `json:"control"`
	// Driver is the driver's user-space the hook mounts into the container
	// (the CDI spec's files, links and library dirs); nil when the node has
	// none to give.
	Driver *driver.Edits `json:"driver,omitempty"`
}

// HookReleaseRequest frees the GPUs the hook recorded for a container: when
// the hook failed half-way, and at poststop.
type HookReleaseRequest struct {
	ContainerID string `json:"containerID"`
}
