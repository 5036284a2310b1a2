// Package cdi turns hotgpu's GPU inventory into a Container Device Interface
// spec (nvidia.com/gpu=0, =<UUID>, =<gpu>:<mig>, =all) and writes it where
// container runtimes look for specs.
//
// Specs are built from the CDI library's own types, validated by it, declare
// the lowest cdiVersion their content needs (containerd v2.2 refuses newer
// ones) and are written atomically, so a runtime never reads half a spec.
//
// It does not decide who gets which GPU and does not talk to NVML: it only
// describes what a container needs to use the GPUs it is given.
package cdi
