package sim

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// maxMIGDevices is what an A100 reports from GetMaxMigDeviceCount.
const maxMIGDevices = 7

// EnableMIG turns MIG mode on for a GPU and creates one GPU instance, with a
// compute instance spanning it, per profile ("1g.5gb", "3g.20gb", ...).
// Instances add to those already there.
func (s *Sim) EnableMIG(id string, profiles ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	d := s.slots[slot]
	infos, err := s.giProfiles(d, profiles)
	if err != nil {
		return fmt.Errorf("failed to enable MIG on simulated GPU %s: %w", id, err)
	}
	if ret, _ := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		return check(ret, "enable MIG on simulated GPU %s", id)
	}
	defer s.migChanged(slot)
	for _, info := range infos {
		if err := createInstance(d, info); err != nil {
			return fmt.Errorf("failed to enable MIG on simulated GPU %s: %w", id, err)
		}
	}
	return nil
}

// DestroyInstance destroys the GPU instance gi of a GPU in MIG mode and its
// compute instances (nvidia-smi mig -dci -dgi): the MIG devices of the other
// GPU instances keep their UUIDs and capability nodes.
func (s *Sim) DestroyInstance(id string, gi int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	d := s.slots[slot]
	d.Lock()
	defer d.Unlock()
	for inst := range d.GpuInstances {
		if int(inst.Info.Id) == gi {
			delete(d.GpuInstances, inst)
			s.migChanged(slot)
			return nil
		}
	}
	return fmt.Errorf("failed to destroy GPU instance %d of simulated GPU %s: %w", gi, id, ErrNotFound)
}

// DisableMIG destroys the GPU's MIG instances and turns MIG mode off.
func (s *Sim) DisableMIG(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	d := s.slots[slot]
	d.Lock()
	d.GpuInstances = map[*server.GpuInstance]struct{}{}
	d.GpuInstanceCounter = 0 // re-enabling gives the same ids again
	d.Unlock()
	if ret, _ := d.SetMigMode(nvml.DEVICE_MIG_DISABLE); ret != nvml.SUCCESS {
		return check(ret, "disable MIG on simulated GPU %s", id)
	}
	s.migChanged(slot)
	return nil
}

// giProfiles looks the profile names (as the ProfileNamer names them) up
// through NVML's profile API and checks that they fit in the GPU beside the
// instances it already has.
func (s *Sim) giProfiles(d *server.Device, names []string) ([]nvml.GpuInstanceProfileInfo, error) {
	byName, capacity := map[string]nvml.GpuInstanceProfileInfo{}, uint32(0)
	var known []string
	for id := range nvml.GPU_INSTANCE_PROFILE_COUNT {
		info, ret := d.GetGpuInstanceProfileInfo(id)
		if ret != nvml.SUCCESS {
			continue
		}
		name, err := s.naming(id, info.MemorySizeMB, d.MemoryInfo.Total)
		if err != nil {
			continue
		}
		if _, dup := byName[name]; !dup { // the lowest id is the plain profile
			byName[name] = info
			known = append(known, name)
		}
		capacity = max(capacity, info.SliceCount)
	}
	used := usedSlices(d)
	infos := make([]nvml.GpuInstanceProfileInfo, 0, len(names))
	for _, name := range names {
		info, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("unknown MIG profile %q: use one of %v", name, known)
		}
		if used += info.SliceCount; used > capacity {
			return nil, fmt.Errorf("MIG profiles %v need more than the GPU's %d slices", names, capacity)
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func usedSlices(d *server.Device) uint32 {
	d.RLock()
	defer d.RUnlock()
	var n uint32
	for gi := range d.GpuInstances {
		n += gi.MIGProfiles.GpuInstanceProfiles[int(gi.Info.ProfileId)].SliceCount
	}
	return n
}

// createInstance makes a GPU instance and one compute instance covering it,
// the layout `nvidia-smi mig -cgi <profile> -C` produces.
func createInstance(d *server.Device, info nvml.GpuInstanceProfileInfo) error {
	gi, ret := d.CreateGpuInstance(&info)
	if err := check(ret, "create GPU instance"); err != nil {
		return err
	}
	wireGPUInstance(gi.(*server.GpuInstance))
	for id := range nvml.COMPUTE_INSTANCE_PROFILE_COUNT {
		ci, ret := gi.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if ret == nvml.SUCCESS && ci.SliceCount == info.SliceCount {
			_, ret = gi.CreateComputeInstance(&ci)
			return check(ret, "create compute instance")
		}
	}
	return fmt.Errorf("no compute instance profile spans a %d-slice GPU instance", info.SliceCount)
}

// wireMIG makes the mock answer the MIG device-handle calls real NVML offers
// (go-nvml's server only models GPU and compute instances).
func (s *Sim) wireMIG(d *server.Device) {
	d.GetGpuInstanceByIdFunc = func(id int) (nvml.GpuInstance, nvml.Return) {
		d.RLock()
		defer d.RUnlock()
		for gi := range d.GpuInstances {
			if int(gi.Info.Id) == id {
				return gi, nvml.SUCCESS
			}
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return maxMIGDevices, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(n int) (nvml.Device, nvml.Return) {
		if n < 0 || n >= maxMIGDevices {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		handles := migHandles(d)
		if n >= len(handles) {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return handles[n], nvml.SUCCESS
	}
}

// migHandles lists the GPU's MIG devices ordered by GPU then compute instance
// id; the mock keeps them in maps, whose order is random.
func migHandles(d *server.Device) []nvml.Device {
	d.RLock()
	gis := make([]*server.GpuInstance, 0, len(d.GpuInstances))
	for gi := range d.GpuInstances {
		gis = append(gis, gi)
	}
	d.RUnlock()
	slices.SortFunc(gis, func(a, b *server.GpuInstance) int { return cmp.Compare(a.Info.Id, b.Info.Id) })
	var handles []nvml.Device
	for _, gi := range gis {
		gi.RLock()
		cis := make([]*server.ComputeInstance, 0, len(gi.ComputeInstances))
		for ci := range gi.ComputeInstances {
			cis = append(cis, ci)
		}
		gi.RUnlock()
		slices.SortFunc(cis, func(a, b *server.ComputeInstance) int { return cmp.Compare(a.Info.Id, b.Info.Id) })
		for _, ci := range cis {
			handles = append(handles, migHandle(d, gi, ci))
		}
	}
	return handles
}

// migHandle is the device handle of one MIG device, with a UUID derived from
// its parent's so it is as stable as the parent's.
func migHandle(parent *server.Device, gi *server.GpuInstance, ci *server.ComputeInstance) nvml.Device {
	giProfile := gi.MIGProfiles.GpuInstanceProfiles[int(gi.Info.ProfileId)]
	ciProfile := gi.MIGProfiles.ComputeInstanceProfiles[int(gi.Info.ProfileId)][int(ci.Info.ProfileId)]
	uuid := "MIG-" + nameUUID(fmt.Sprintf("%s/gi%d/ci%d", parent.UUID, gi.Info.Id, ci.Info.Id))
	attrs := nvml.DeviceAttributes{
		MultiprocessorCount:       ciProfile.MultiprocessorCount,
		GpuInstanceSliceCount:     giProfile.SliceCount,
		ComputeInstanceSliceCount: ciProfile.SliceCount,
		MemorySizeMB:              giProfile.MemorySizeMB,
	}
	return &mock.Device{
		GetUUIDFunc:                            func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetGpuInstanceIdFunc:                   func() (int, nvml.Return) { return int(gi.Info.Id), nvml.SUCCESS },
		GetComputeInstanceIdFunc:               func() (int, nvml.Return) { return int(ci.Info.Id), nvml.SUCCESS },
		GetAttributesFunc:                      func() (nvml.DeviceAttributes, nvml.Return) { return attrs, nvml.SUCCESS },
		IsMigDeviceHandleFunc:                  func() (bool, nvml.Return) { return true, nvml.SUCCESS },
		GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) { return parent, nvml.SUCCESS },
	}
}

// wireGPUInstance adds the by-id lookup of compute instances that go-nvml's
// server leaves out.
func wireGPUInstance(gi *server.GpuInstance) {
	gi.GetComputeInstanceByIdFunc = func(id int) (nvml.ComputeInstance, nvml.Return) {
		gi.RLock()
		defer gi.RUnlock()
		for ci := range gi.ComputeInstances {
			if int(ci.Info.Id) == id {
				return ci, nvml.SUCCESS
			}
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
}
