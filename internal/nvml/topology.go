package nvml

import (
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// pcieLinks maps NVML's common-ancestor levels onto the device model.
var pcieLinks = map[nvml.GpuTopologyLevel]gpu.Link{
	nvml.TOPOLOGY_INTERNAL:   gpu.LinkSame,
	nvml.TOPOLOGY_SINGLE:     gpu.LinkPCIeSwitch,
	nvml.TOPOLOGY_MULTIPLE:   gpu.LinkPCIeMulti,
	nvml.TOPOLOGY_HOSTBRIDGE: gpu.LinkHostBridge,
	nvml.TOPOLOGY_NODE:       gpu.LinkNUMANode,
	nvml.TOPOLOGY_SYSTEM:     gpu.LinkSystem,
}

// nvlinks counts one GPU's active NVLinks: to each peer GPU directly, and to
// NVSwitches, which connect it to every other GPU on a switch.
type nvlinks struct {
	direct    map[int]int // peer index -> links
	viaSwitch int
}

// readPeers fills Peers of every readable GPU: the PCIe level and NVLink
// count to each other readable GPU. devs[i] is the handle of gpus[i], nil
// for a lost GPU, which has no peers and is no one's peer.
func readPeers(devs []nvml.Device, gpus []gpu.GPU) error {
	byBus := make(map[string]int, len(gpus))
	for i := range gpus {
		if devs[i] != nil {
			byBus[gpus[i].PCIBusID] = gpus[i].Index
		}
	}
	links := make([]nvlinks, len(devs))
	var ok []int // positions of the readable GPUs
	for i, d := range devs {
		if d == nil {
			continue
		}
		l, err := readNVLinks(d, gpus[i].Index, byBus)
		if err != nil {
			return err
		}
		links[i] = l
		ok = append(ok, i)
	}
	for _, i := range ok {
		gpus[i].Peers = make([]gpu.Peer, 0, len(ok)-1)
	}
	for x, i := range ok {
		for _, j := range ok[x+1:] {
			level, err := pcieLevel(devs[i], devs[j], gpus[i].Index, gpus[j].Index)
			if err != nil {
				return err
			}
			n := nvlinkCount(links[i], links[j], gpus[i].Index, gpus[j].Index)
			gpus[i].Peers = append(gpus[i].Peers, gpu.Peer{Index: gpus[j].Index, NVLinks: n, PCIe: level})
			gpus[j].Peers = append(gpus[j].Peers, gpu.Peer{Index: gpus[i].Index, NVLinks: n, PCIe: level})
		}
	}
	return nil
}

// pcieLevel asks NVML for the closest common PCIe ancestor. Where NVML cannot
// tell (some VMs) the GPUs are reported as far apart as possible, so a
// topology-aware allocator never counts on a link that may not exist.
func pcieLevel(a, b nvml.Device, ia, ib int) (gpu.Link, error) {
	level, ret := a.GetTopologyCommonAncestor(b)
	if ret == nvml.ERROR_NOT_SUPPORTED || slices.Contains(brokenGPU, ret) {
		return gpu.LinkSystem, nil // a GPU lost since it was read
	}
	if err := check(ret, "get PCIe topology between GPU %d and GPU %d", ia, ib); err != nil {
		return 0, err
	}
	if l, ok := pcieLinks[level]; ok {
		return l, nil
	}
	return gpu.LinkSystem, nil
}

// nvlinkCount is the number of NVLinks usable between two GPUs: direct links,
// or through NVSwitches the fewer links of the two sides.
func nvlinkCount(a, b nvlinks, ia, ib int) int {
	if n := a.direct[ib]; n > 0 {
		return n
	}
	if n := b.direct[ia]; n > 0 {
		return n
	}
	return min(a.viaSwitch, b.viaSwitch)
}

func readNVLinks(d nvml.Device, index int, byBus map[string]int) (nvlinks, error) {
	l := nvlinks{direct: map[int]int{}}
	for link := range nvml.NVLINK_MAX_LINKS {
		state, ret := d.GetNvLinkState(link)
		switch {
		case ret == nvml.ERROR_NOT_SUPPORTED:
			// This link is not there (or not wired on this board); later
			// ones may be: a GPU without NVLink answers this for all 18.
			continue
		case ret == nvml.ERROR_INVALID_ARGUMENT:
			return l, nil // past the GPU's last link
		case slices.Contains(brokenGPU, ret):
			return l, nil // a GPU lost since it was read: no links
		}
		if err := check(ret, "get state of NVLink %d of GPU %d", link, index); err != nil {
			return l, err
		}
		if state != nvml.FEATURE_ENABLED {
			continue
		}
		if err := l.add(d, link, index, byBus); err != nil {
			return l, err
		}
	}
	return l, nil
}

// add counts one active link by what is on its other end.
func (l *nvlinks) add(d nvml.Device, link, index int, byBus map[string]int) error {
	kind, ret := d.GetNvLinkRemoteDeviceType(link)
	if ret == nvml.SUCCESS && kind == nvml.NVLINK_DEVICE_TYPE_SWITCH {
		l.viaSwitch++
		return nil
	}
	if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED && ret != nvml.ERROR_FUNCTION_NOT_FOUND {
		return check(ret, "get remote device type of NVLink %d of GPU %d", link, index)
	}
	pci, ret := d.GetNvLinkRemotePciInfo(link)
	if ret == nvml.ERROR_NOT_SUPPORTED {
		return nil // the far end cannot be told: count no peer
	}
	if err := check(ret, "get remote end of NVLink %d of GPU %d", link, index); err != nil {
		return err
	}
	if peer, ok := byBus[normalizeBusID(cString(pci.BusId[:]))]; ok {
		l.direct[peer]++
	}
	return nil
}
