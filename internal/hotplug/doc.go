// Package hotplug holds the mechanics of giving a RUNNING container a device
// and taking it away again: finding the container's cgroups and root, opening
// (and closing) device access in its cgroup — cgroup v1 devices.allow/deny or a
// replaced cgroup v2 eBPF program — making the device node inside its /dev
// without following anything the container controls, and finding the
// processes that still hold a node open.
//
// Every step is reversible and leaves things as they were when it fails, so a
// caller can run reserve -> grant -> node -> record and undo what succeeded.
//
// It is not the place for policy or bookkeeping: it knows nothing of the
// ledger, NRI, which GPU belongs to whom, or when to call what. Nor does it
// load drivers or talk to NVML. All functions need root (CAP_SYS_ADMIN for
// bpf(2) and cgroup writes, CAP_MKNOD for nodes) and the host's cgroup and
// PID namespaces.
package hotplug
