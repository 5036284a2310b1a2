// Package driver finds what makes up the NVIDIA driver's user-space on a
// host: the libraries of the driver's version that CUDA and NVML programs
// load (the "compute,utility" set of libnvidia-container), the OpenCL ICD
// file, the driver's tools, its GSP firmware and the sockets of its daemons
// (persistenced, fabricmanager, MPS). It turns them into the edits a
// container needs to use a GPU: read-only bind mounts at the same paths,
// the SONAME and development symlinks to create inside the container, and
// the directories whose linker cache must be refreshed.
//
// The same edits serve every path that hands out a GPU (the CDI spec, the
// NRI plugin, the OCI hook, live attach), so each gets the same, version
// matched files. Libraries are found as NVIDIA's tools find them: the exact
// file <name>.so.<driver version>, through the driver root's ld.so.cache and
// then the standard search paths, 64-bit only, never a stale older version
// left beside the current one.
//
// It reads the driver root and nothing else: it does not talk to NVML (the
// caller passes the driver version) and does not touch containers.
// Standard library and golang.org/x/sys only.
package driver
