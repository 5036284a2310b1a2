package dra

import (
	"fmt"
	"slices"
	"strconv"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// DriverName is the DRA driver's name, and its DeviceClass's.
const DriverName = "gpu.hotgpu.dev"

// DeviceName is a GPU's device name in the pool.
func DeviceName(g *gpu.GPU) string { return "gpu-" + strconv.Itoa(g.Index) }

// available reports whether DRA may offer the GPU: readable, not in MIG
// mode (MIG devices are not offered yet), and free or held for a claim.
func available(l *ledger.Ledger, g *gpu.GPU) bool {
	if g.Lost != "" || g.MIGEnabled {
		return false
	}
	if cur, held := l.Lookup(g.UUID); held {
		return cur.Reason == ledger.DRA
	}
	return l.HeldBy(g.UUID) == "" // a MIG device of it is held
}

// Resources is the node's pool: every GPU DRA may offer, as a device.
// GPUs held for claims stay in it (their allocations stay valid); GPUs held
// by any other allocator are left out until released.
func Resources(node string, inv *gpu.Inventory, l *ledger.Ledger) resourceslice.DriverResources {
	domains := nvlinkDomains(inv)
	devices := []resourceapi.Device{}
	for i := range inv.GPUs {
		g := &inv.GPUs[i]
		if !available(l, g) {
			continue
		}
		devices = append(devices, device(inv, g, domains[g.Index]))
	}
	return resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		node: {Slices: []resourceslice.Slice{{Devices: devices}}},
	}}
}

func device(inv *gpu.Inventory, g *gpu.GPU, domain string) resourceapi.Device {
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		"uuid":          {StringValue: ptr.To(g.UUID)},
		"index":         {IntValue: ptr.To(int64(g.Index))},
		"productName":   {StringValue: ptr.To(g.Name)},
		"driverVersion": {StringValue: ptr.To(inv.DriverVersion)},
		"cudaVersion":   {StringValue: ptr.To(inv.CUDAVersion)},
	}
	if inv.DriverVersion == "" {
		delete(attrs, "driverVersion")
	}
	if inv.CUDAVersion == "" {
		delete(attrs, "cudaVersion")
	}
	if domain != "" {
		attrs["nvlinkDomain"] = resourceapi.DeviceAttribute{StringValue: ptr.To(domain)}
	}
	// The standard attribute comes from sysfs: absent for simulated GPUs.
	if root, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(g.PCIBusID); err == nil {
		attrs[root.Name] = root.Value
	}
	return resourceapi.Device{
		Name:       DeviceName(g),
		Attributes: attrs,
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			"memory": {Value: *resource.NewQuantity(int64(g.MemoryMiB)<<20, resource.BinarySI)},
		},
	}
}

// nvlinkDomains names each GPU's NVLink domain: the GPUs reachable over
// NVLink from it, named after the lowest index among them ("nvlink-0").
// A GPU with no NVLink has no domain, so a matchAttribute constraint on
// nvlinkDomain never pairs it.
func nvlinkDomains(inv *gpu.Inventory) map[int]string {
	links := map[int][]int{}
	for _, g := range inv.GPUs {
		for _, p := range g.Peers {
			if p.NVLinks > 0 {
				links[g.Index] = append(links[g.Index], p.Index)
				links[p.Index] = append(links[p.Index], g.Index)
			}
		}
	}
	out := map[int]string{}
	for _, g := range inv.GPUs {
		if _, done := out[g.Index]; done || len(links[g.Index]) == 0 {
			continue
		}
		member := []int{g.Index}
		for i := 0; i < len(member); i++ {
			for _, p := range links[member[i]] {
				if !slices.Contains(member, p) {
					member = append(member, p)
				}
			}
		}
		name := fmt.Sprintf("nvlink-%d", slices.Min(member))
		for _, m := range member {
			out[m] = name
		}
	}
	return out
}
