package nvml

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// readMIG fills the MIG mode and MIG devices of g. A GPU without MIG support
// simply reports MIG disabled.
func (r *reader) readMIG(d nvml.Device, g *gpu.GPU) error {
	mode, _, ret := d.GetMigMode()
	if ret == nvml.ERROR_NOT_SUPPORTED {
		return nil
	}
	if err := check(ret, "get MIG mode of GPU %d", g.Index); err != nil {
		return err
	}
	g.MIGEnabled = mode == nvml.DEVICE_MIG_ENABLE
	if !g.MIGEnabled {
		return nil
	}
	parentBytes := g.MemoryMiB << 20
	if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
		parentBytes = mem.Total // exact: profile names round from it
	}
	slots, ret := d.GetMaxMigDeviceCount()
	if err := check(ret, "count MIG devices of GPU %d", g.Index); err != nil {
		return err
	}
	for slot := range slots {
		m, ret := d.GetMigDeviceHandleByIndex(slot)
		if ret == nvml.ERROR_NOT_FOUND {
			continue // an empty slot: MIG devices need not be contiguous
		}
		if err := check(ret, "get MIG device %d of GPU %d", slot, g.Index); err != nil {
			return err
		}
		mig, err := r.readMIGDevice(m, d, g, len(g.MIG), parentBytes)
		if err != nil {
			return err
		}
		g.MIG = append(g.MIG, mig)
	}
	return nil
}

func (r *reader) readMIGDevice(m, parentDev nvml.Device, parent *gpu.GPU, index int, parentBytes uint64) (gpu.MIGDevice, error) {
	mig := gpu.MIGDevice{Parent: parent.Index, Index: index}
	name := fmt.Sprintf("MIG device %d of GPU %d", index, parent.Index)
	var ret nvml.Return
	if mig.UUID, ret = m.GetUUID(); ret != nvml.SUCCESS {
		return mig, check(ret, "get UUID of %s", name)
	}
	if mig.GI, ret = m.GetGpuInstanceId(); ret != nvml.SUCCESS {
		return mig, check(ret, "get GPU instance of %s", name)
	}
	if mig.CI, ret = m.GetComputeInstanceId(); ret != nvml.SUCCESS {
		return mig, check(ret, "get compute instance of %s", name)
	}
	attrs, ret := m.GetAttributes()
	if ret != nvml.SUCCESS {
		return mig, check(ret, "get attributes of %s", name)
	}
	profile, err := profileOf(parentDev, mig.GI, mig.CI, attrs, parentBytes)
	if err != nil {
		return mig, fmt.Errorf("failed to name the profile of %s: %w", name, err)
	}
	mig.Profile = profile
	mig.MemoryMiB = attrs.MemorySizeMB
	caps, err := r.capsNodes(parent.Minor, mig.GI, mig.CI)
	if err != nil {
		return mig, fmt.Errorf("failed to find the caps nodes of %s: %w", name, err)
	}
	mig.Caps = caps
	return mig, nil
}

// profileOf names the MIG device's profile as go-nvlib does (see
// migProfile). Where the driver cannot say which profiles the instances
// use, the name is made from the device's slice counts, without attributes.
func profileOf(parent nvml.Device, gi, ci int, attrs nvml.DeviceAttributes, parentBytes uint64) (string, error) {
	giIndex, ciIndex, err := readProfile(parent, gi, ci)
	if err == nil {
		p, err := newMIGProfile(giIndex, ciIndex, attrs.MemorySizeMB, parentBytes)
		if err == nil {
			return p.String(), nil
		}
	}
	if isBroken(err) {
		return "", err
	}
	return migProfile{c: int(attrs.ComputeInstanceSliceCount), g: int(attrs.GpuInstanceSliceCount),
		gb: migMemoryGB(parentBytes, attrs.MemorySizeMB)}.String(), nil
}

// capsNodes returns the GPU-instance and compute-instance access nodes. Both
// are needed: the driver checks the GI capability, then the CI one.
func (r *reader) capsNodes(gpuMinor, gi, ci int) ([]gpu.DeviceNode, error) {
	if r.majors.caps == 0 {
		return nil, fmt.Errorf("no nvidia-caps major in /proc/devices: the driver was loaded without MIG capability support; reload it or check 'nvidia-modprobe -f /proc/driver/nvidia/capabilities/mig/config'")
	}
	if r.minors == nil {
		t, err := r.migMinors()
		if err != nil {
			return nil, err
		}
		r.minors = t
	}
	var nodes []gpu.DeviceNode
	for _, c := range []int{-1, ci} {
		minor, ok := r.minors.minor(gpuMinor, gi, c)
		if !ok {
			return nil, fmt.Errorf("%w: no minor for %s in mig-minors", ErrNotFound, capKey(gpuMinor, gi, c))
		}
		path := fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", minor)
		nodes = append(nodes, gpu.DeviceNode{Path: path, Major: r.majors.caps, Minor: minor})
	}
	return nodes, nil
}
