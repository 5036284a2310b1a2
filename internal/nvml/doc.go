// Package nvml turns what the NVIDIA driver reports through NVML into
// hotgpu's device model (*gpu.Inventory): GPUs, their MIG devices and
// /dev/nvidia-caps nodes, the NVLink/PCIe topology between them, and the
// control device nodes every GPU container needs.
//
// It (with its simulator, internal/nvml/sim) is the only package that imports
// github.com/NVIDIA/go-nvml, and it turns
// nvml.Return codes into Go errors (see ErrNotFound and friends) so no other
// package has to know NVML exists.
//
// The same code reads real hardware and a simulated node: New with
// WithSimulate reads the simulator of package internal/nvml/sim (presets
// "dgxa100" and "pcie8") through nvml.Interface, as it reads the real
// library, and Provider.Simulation hands out the simulator so tests and the
// daemon can remove GPUs, bring them back and enable MIG.
//
// It is not the place for policy (which GPU to hand out) or for health
// decisions; it only reports what is there, and (HealthWatcher) the error
// events NVML delivers, which internal/health turns into GPU health.
package nvml
