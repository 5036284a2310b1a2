// Package dra is hotgpud's Dynamic Resource Allocation kubelet plugin,
// driver gpu.hotgpu.dev, built on k8s.io/dynamic-resource-allocation's
// kubeletplugin helper; it is the only importer of the DRA libraries.
//
// It publishes one ResourceSlice pool per node, named after the node, with
// each whole GPU a device ("gpu-<index>"). Prepare writes one CDI spec per
// claim, its device names carrying the claim's UID, and holds the claim's
// GPUs in the ledger (reason dra); Unprepare removes both.
//
// One ledger for every allocator: a GPU held by the device plugin, an
// annotation, live attach or the hook is left out of the published slice,
// so the scheduler never allocates it, and Prepare refuses it anyway if a
// race lets it through, writing why into the claim's status.devices. A GPU held for a claim is withdrawn from the device
// plugin (its devices state) and refused to annotations and live attach by
// the ledger itself.
package dra
