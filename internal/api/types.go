// Package api is the contract of hotgpud's local control API (versioned
// HTTP/JSON on a unix socket: attach, detach, the GPUs and their holders,
// status, health and the hook's reservations) and its client. It holds the
// wire types and Client only, so the hotgpu CLI and hotgpu-hook that link
// it start without the daemon's machinery; the server is
// internal/apiserver.
package api

import (
	"time"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// DefaultSocket is hotgpud's API socket unless configured otherwise.
const DefaultSocket = "/run/hotgpu/hotgpu.sock"

// Version prefixes every path: /v1/attach, /v1/detach, /v1/gpus, /v1/status.
const Version = "v1"

// Target names a container: by CRI/NRI container id, by pod (namespace,
// name and, when the pod has several, container name), or by a process in
// it (any runtime).
type Target struct {
	ContainerID   string `json:"containerID,omitempty"`
	PodNamespace  string `json:"podNamespace,omitempty"`
	PodName       string `json:"podName,omitempty"`
	ContainerName string `json:"containerName,omitempty"`
	PID           int    `json:"pid,omitempty"`
}

// AttachRequest asks for GPUs in a running container: IDs (indices, UUIDs,
// MIG device names "0:1" or MIG UUIDs) or a Count of hotgpu's choosing:
// whole GPUs, or MIG devices of MIGProfile ("1g.5gb") when it is set.
type AttachRequest struct {
	Target     Target   `json:"target"`
	IDs        []string `json:"ids,omitempty"`
	Count      int      `json:"count,omitempty"`
	MIGProfile string   `json:"migProfile,omitempty"`
}

// DetachRequest takes GPUs away: IDs, or every detachable GPU when All.
type DetachRequest struct {
	Target Target   `json:"target"`
	IDs    []string `json:"ids,omitempty"`
	All    bool     `json:"all,omitempty"`
	Force  bool     `json:"force,omitempty"`
}

// Result says what an attach or detach did.
type Result struct {
	Holder ledger.Holder `json:"holder"`
	GPUs   []gpu.GPU     `json:"gpus"`
	// Nodes says what happened to device nodes when it was not simply
	// "made on attach, removed on detach": nodes that were there already
	// (hotgpu never removes them), or a /dev shared with the host, where it
	// neither creates nor removes any.
	Nodes string `json:"nodes,omitempty"`
	// Quarantined are the detached GPUs a process still held: nobody gets
	// them until it lets go.
	Quarantined []gpu.GPU `json:"quarantined,omitempty"`
	// Driver says what attach did about the driver's user-space in the
	// container (mounted now, there already, or why not given).
	Driver string `json:"driver,omitempty"`
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

// HealthStatus is one GPU's health, as `hotgpu health` shows it.
type HealthStatus struct {
	Index   int    `json:"index"`
	UUID    string `json:"uuid"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
	// Manual marks stay until `hotgpu health set ID healthy`; others
	// recover by themselves at RecoversAt unless another error comes.
	Manual bool `json:"manual,omitempty"`
	// Fatal marks an error that needs a GPU reset or a reboot (a lost GPU,
	// Xid 79, ...): it stays until the GPU is set healthy after the reset,
	// or until NVML reads a lost GPU again.
	Fatal      bool      `json:"fatal,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	RecoversAt time.Time `json:"recoversAt,omitzero"`
}

// HealthSetRequest marks a GPU (index or UUID) healthy or unhealthy by hand.
type HealthSetRequest struct {
	ID      string `json:"id"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
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
