// Package doctor checks a node end to end for hotgpu: the driver as NVML
// and the kernel see it, the CDI spec, the container runtime and cgroups,
// hotgpud itself and, when asked, a live attach into a throwaway sandbox.
// Each step yields Checks: a status (ok, warn, fail), what was found and
// what to do about it. The package decides; cmd/hotgpu only prints.
//
// It is not a monitor: it runs once and reads the node, and changes nothing
// but what the attach test makes (a cgroup, a mount namespace, a grant it
// takes back) and removes again. It needs no cgo: NVML's inventory is
// handed in (cmd/hotgpu reads it through its cgo helper).
package doctor
