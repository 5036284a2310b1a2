// Package hooks holds the logic of the OCI hooks hotgpu asks runtimes to run:
// create-symlinks and update-ldcache, the createContainer hooks of the CDI
// spec that make the driver libraries' SONAME links beside the mounted files
// and make them visible to the container's linker, and prestart,
// which gives GPUs to containers of runtimes without NRI (and, since a hook
// cannot add mounts, mounts the driver's files into the container's mount
// namespace itself). GiveRunning does the same for a running container at
// live attach.
//
// Hooks run as root on the host against a root filesystem the container
// controls, so every path inside it is resolved within the root (a symlink
// there can never send a write to the host), and child processes get an
// explicit minimal environment. cmd/hotgpu-hook is only the command line.
package hooks
