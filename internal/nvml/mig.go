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
		mig, err := r.readMIGDevice(m, g, len(g.MIG))
		if err != nil {
			return err
		}
		g.MIG = append(g.MIG, mig)
	}
	return nil
}

func (r *reader) readMIGDevice(m nvml.Device, parent *gpu.GPU, index int) (gpu.MIGDevice, error) {
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
	mig.Profile = profileName(attrs)
	mig.MemoryMiB = attrs.MemorySizeMB
	caps, err := r.capsNodes(parent.Minor, mig.GI, mig.CI)
	if err != nil {
		return mig, fmt.Errorf("failed to find the caps nodes of %s: %w", name, err)
	}
	mig.Caps = caps
	return mig, nil
}

// profileName names a MIG device the way nvidia-smi does: "3g.20gb" when the
// compute instance spans its GPU instance, "1c.3g.20gb" when it does not.
func profileName(a nvml.DeviceAttributes) string {
	gb := (a.MemorySizeMB + 1023) / 1024
	if a.ComputeInstanceSliceCount == a.GpuInstanceSliceCount {
		return fmt.Sprintf("%dg.%dgb", a.GpuInstanceSliceCount, gb)
	}
	return fmt.Sprintf("%dc.%dg.%dgb", a.ComputeInstanceSliceCount, a.GpuInstanceSliceCount, gb)
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
