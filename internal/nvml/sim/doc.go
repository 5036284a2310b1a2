// Package sim is a simulated NVIDIA node: go-nvml's mock server populated
// from a preset ("dgxa100", "pcie8") with deterministic UUIDs, bus ids and
// NVLink/PCIe topology, MIG instances, error events and GPUs that are
// removed or fall off the bus.
//
// It answers through nvml.Interface, the interface the real library
// implements, so internal/nvml reads a simulated node with the same code as
// real hardware (go-nvml keeps its own mock apart from its bindings the same
// way). Sim's methods change the node as hardware events would; the next
// read sees the change.
//
// It is not a model of a driver's behaviour beyond what hotgpu reads: no
// processes run on simulated GPUs and nothing is allocated in them.
package sim
