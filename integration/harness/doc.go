// Package harness runs real containerd, runc and containers for hotgpu's
// integration tests and demo: it builds (or finds cached) binaries and images,
// starts a private containerd with NRI and CDI enabled under a temp dir, drives
// it through CRI (as kubelet would) and through ctr (the non-CRI path), and
// tears everything down again — shims, containers, mounts, cgroups and dirs.
//
// It is not a test framework and knows nothing about hotgpu itself: tests start
// hotgpud against the NRI socket and CDI dir a Containerd exposes.
//
// Everything here needs root. Deps and StartContainerd skip the calling test
// with a reason when the process is not root.
package harness
