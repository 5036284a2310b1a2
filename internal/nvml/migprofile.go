package nvml

import (
	"fmt"
	"math"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// migProfile is a MIG device's profile as go-nvlib (and so NVIDIA's device
// plugin, nvidia-ctk and mig-parted) names it: "1g.5gb", "1g.10gb+me",
// "1c.2g.10gb", "1g.12gb-me". Users copy these names between the tools.
type migProfile struct {
	c, g, gb int
	attrs    []string // "+me", "+me.all", "+gfx"
	negAttrs []string // "-me"
}

func (p migProfile) String() string {
	var suffix string
	if len(p.attrs) > 0 {
		suffix = "+" + strings.Join(p.attrs, ",")
	}
	if len(p.negAttrs) > 0 {
		suffix = "-" + strings.Join(p.negAttrs, ",")
	}
	if p.c == p.g {
		return fmt.Sprintf("%dg.%dgb%s", p.g, p.gb, suffix)
	}
	return fmt.Sprintf("%dc.%dg.%dgb%s", p.c, p.g, p.gb, suffix)
}

// giProfiles maps NVML's GPU-instance profile indices (GPU_INSTANCE_PROFILE_*)
// to their slice count and name attributes.
var giProfileKinds = map[int]struct {
	slices   int
	attrs    []string
	negAttrs []string
}{
	nvml.GPU_INSTANCE_PROFILE_1_SLICE:        {slices: 1},
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1:   {slices: 1, attrs: []string{"me"}},
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2:   {slices: 1},
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_GFX:    {slices: 1, attrs: []string{"gfx"}},
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_NO_ME:  {slices: 1, negAttrs: []string{"me"}},
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME: {slices: 1, attrs: []string{"me.all"}},
	nvml.GPU_INSTANCE_PROFILE_2_SLICE:        {slices: 2},
	nvml.GPU_INSTANCE_PROFILE_2_SLICE_REV1:   {slices: 2, attrs: []string{"me"}},
	nvml.GPU_INSTANCE_PROFILE_2_SLICE_GFX:    {slices: 2, attrs: []string{"gfx"}},
	nvml.GPU_INSTANCE_PROFILE_2_SLICE_NO_ME:  {slices: 2, negAttrs: []string{"me"}},
	nvml.GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME: {slices: 2, attrs: []string{"me.all"}},
	nvml.GPU_INSTANCE_PROFILE_3_SLICE:        {slices: 3},
	nvml.GPU_INSTANCE_PROFILE_3_SLICE_GFX:    {slices: 3, attrs: []string{"gfx"}},
	nvml.GPU_INSTANCE_PROFILE_4_SLICE:        {slices: 4},
	nvml.GPU_INSTANCE_PROFILE_4_SLICE_GFX:    {slices: 4, attrs: []string{"gfx"}},
	nvml.GPU_INSTANCE_PROFILE_6_SLICE:        {slices: 6},
	nvml.GPU_INSTANCE_PROFILE_7_SLICE:        {slices: 7},
	nvml.GPU_INSTANCE_PROFILE_8_SLICE:        {slices: 8},
}

// ciSlices maps NVML's compute-instance profile indices to slice counts.
var ciSlices = map[int]int{
	nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE:      1,
	nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1: 1,
	nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE:      2,
	nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE:      3,
	nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE:      4,
	nvml.COMPUTE_INSTANCE_PROFILE_6_SLICE:      6,
	nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE:      7,
	nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE_NVL:  7,
	nvml.COMPUTE_INSTANCE_PROFILE_8_SLICE:      8,
}

// newMIGProfile names the profile of a MIG device from its GPU-instance and
// compute-instance profile indices, its memory and its parent's memory.
func newMIGProfile(giIndex, ciIndex int, migMemoryMB, parentMemoryBytes uint64) (migProfile, error) {
	gi, ok := giProfileKinds[giIndex]
	if !ok {
		return migProfile{}, fmt.Errorf("unknown GPU instance profile %d", giIndex)
	}
	c, ok := ciSlices[ciIndex]
	if !ok {
		return migProfile{}, fmt.Errorf("unknown compute instance profile %d", ciIndex)
	}
	return migProfile{c: c, g: gi.slices, gb: migMemoryGB(parentMemoryBytes, migMemoryMB), attrs: gi.attrs, negAttrs: gi.negAttrs}, nil
}

// giProfileName names a GPU-instance profile with one compute instance
// spanning it: the names the simulation creates instances by.
func giProfileName(giIndex int, memoryMB, parentMemoryBytes uint64) (string, error) {
	p, err := newMIGProfile(giIndex, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, memoryMB, parentMemoryBytes)
	if err != nil {
		return "", err
	}
	p.c = p.g
	return p.String(), nil
}

// migMemoryGB is the "gb" of a profile name: the instance's share of the
// GPU's memory rounded up to eighths, times the GPU's memory in whole GiB.
// A plain MiB/1024 differs from it (an H100 NVL's 1g instance has 11008 MiB
// and is called 1g.12gb).
func migMemoryGB(parentBytes, migMB uint64) int {
	const eighths = 8
	if parentBytes == 0 {
		return int((migMB + 1023) / 1024)
	}
	share := float64(migMB<<20) / float64(parentBytes)
	share = math.Ceil(share*eighths) / eighths
	totalGB := float64((parentBytes + 1<<30 - 1) >> 30)
	return int(math.Round(share * totalGB))
}

// readProfile finds the GPU-instance and compute-instance profile indices of
// MIG device gi/ci the way go-nvlib does: the instances' profile ids, looked
// up among the profiles the parent offers.
func readProfile(parent nvml.Device, gi, ci int) (giIndex, ciIndex int, err error) {
	giHandle, ret := parent.GetGpuInstanceById(gi)
	if err := check(ret, "get GPU instance %d", gi); err != nil {
		return 0, 0, err
	}
	giInfo, ret := giHandle.GetInfo()
	if err := check(ret, "get info of GPU instance %d", gi); err != nil {
		return 0, 0, err
	}
	ciHandle, ret := giHandle.GetComputeInstanceById(ci)
	if err := check(ret, "get compute instance %d of GPU instance %d", ci, gi); err != nil {
		return 0, 0, err
	}
	ciInfo, ret := ciHandle.GetInfo()
	if err := check(ret, "get info of compute instance %d of GPU instance %d", ci, gi); err != nil {
		return 0, 0, err
	}
	giIndex, ok := findGIProfile(parent, giInfo.ProfileId)
	if !ok {
		return 0, 0, fmt.Errorf("GPU instance %d: %w: no profile with id %d", gi, ErrNotFound, giInfo.ProfileId)
	}
	ciIndex, ok = findCIProfile(giHandle, ciInfo.ProfileId)
	if !ok {
		return 0, 0, fmt.Errorf("compute instance %d of GPU instance %d: %w: no profile with id %d", ci, gi, ErrNotFound, ciInfo.ProfileId)
	}
	return giIndex, ciIndex, nil
}

func findGIProfile(parent nvml.Device, id uint32) (int, bool) {
	for i := range nvml.GPU_INSTANCE_PROFILE_COUNT {
		if info, ret := parent.GetGpuInstanceProfileInfo(i); ret == nvml.SUCCESS && info.Id == id {
			return i, true
		}
	}
	return 0, false
}

func findCIProfile(gi nvml.GpuInstance, id uint32) (int, bool) {
	for i := range nvml.COMPUTE_INSTANCE_PROFILE_COUNT {
		for e := range nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT {
			if info, ret := gi.GetComputeInstanceProfileInfo(i, e); ret == nvml.SUCCESS && info.Id == id {
				return i, true
			}
		}
	}
	return 0, false
}
