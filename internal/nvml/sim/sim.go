package sim

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Sim is a simulated node: go-nvml's mock server with deterministic UUIDs,
// bus ids and topology. Its methods change the node the way hardware events
// would; the next Provider.Inventory sees the change.
//
// GPUs are named by UUID or by slot, the GPU's index in the complete preset
// ("3" is always the fourth GPU of the preset, even after GPU 1 is removed).
type Sim struct {
	mu      *sync.Mutex // the reader's: mutations never race an inventory
	name    string
	naming  ProfileNamer
	preset  *preset
	server  *server.Server
	slots   []*server.Device
	removed map[int]bool
	lost    map[int]nvml.Device // slot -> the handle NVML gives for it now
	events  *simEvents
}

// ProfileNamer names a GPU-instance profile of NVML's profile API
// (GPU_INSTANCE_PROFILE_*), with one compute instance spanning it, as the
// reader of the node names the MIG devices it finds ("1g.5gb", "1g.5gb+me").
// EnableMIG takes profiles by these names, so a simulated instance reads
// back with the name it was created by.
type ProfileNamer func(giProfile int, memoryMB, parentMemoryBytes uint64) (string, error)

// New builds the simulated node of a preset (see Presets). mu is the lock
// its reader holds around NVML calls; the Sim takes it around every change.
func New(name string, mu *sync.Mutex, naming ProfileNamer) (*Sim, error) {
	p, ok := presets[name]
	if !ok {
		return nil, fmt.Errorf("unknown simulation preset %q: use one of %v", name, Presets())
	}
	srv, _ := server.New( // server.New never fails; its error is for API symmetry
		server.WithGPUs(gpus.Multiple(len(p.busIDs), p.config)...),
		server.WithDriverVersion("550.54.15"),
		server.WithNVMLVersion("12.550.54.15"),
		server.WithCUDADriverVersion(12040),
	)
	s := &Sim{mu: mu, name: name, naming: naming, preset: p, server: srv, removed: map[int]bool{}, lost: map[int]nvml.Device{}}
	for slot, d := range srv.Devices {
		s.slots = append(s.slots, d.(*server.Device))
		s.wire(slot)
	}
	s.wireEvents()
	return s, nil
}

// Library is the simulated NVML, the interface the real library implements.
func (s *Sim) Library() nvml.Interface { return s.server }

// Server is go-nvml's mock server behind Library, for tests that replace
// one of its calls.
func (s *Sim) Server() *server.Server { return s.server }

// Slot is the mock device of a slot, for tests that replace one of its calls.
func (s *Sim) Slot(slot int) *server.Device { return s.slots[slot] }

// RemoveGPU makes a GPU disappear from NVML's count, as when it is unbound
// from the driver or hot-removed (a GPU that falls off the bus stays counted:
// see LoseGPU). The GPUs after it move down one NVML index, as NVML
// enumerates contiguously; their minors and UUIDs stay.
func (s *Sim) RemoveGPU(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	if s.removed[slot] {
		return fmt.Errorf("failed to remove simulated GPU %s: %w (already removed)", id, ErrNotFound)
	}
	s.removed[slot] = true
	s.renumber()
	return nil
}

// RestoreGPU brings a removed or lost GPU back, with its MIG state as it was.
func (s *Sim) RestoreGPU(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	if !s.removed[slot] && s.lost[slot] == nil {
		return fmt.Errorf("failed to restore simulated GPU %s: it is present", id)
	}
	delete(s.removed, slot)
	delete(s.lost, slot)
	s.renumber()
	return nil
}

// renumber rebuilds the mock's device list from the present slots; a lost
// GPU keeps its place with its lost handle.
func (s *Sim) renumber() {
	s.server.Devices = s.server.Devices[:0]
	for slot, d := range s.slots {
		switch {
		case s.removed[slot]:
			continue
		case s.lost[slot] != nil:
			s.server.Devices = append(s.server.Devices, s.lost[slot])
			continue
		}
		d.Index = len(s.server.Devices)
		s.server.Devices = append(s.server.Devices, d)
	}
}

func (s *Sim) resolve(id string) (int, error) {
	if n, err := strconv.Atoi(id); err == nil {
		if n < 0 || n >= len(s.slots) {
			return 0, fmt.Errorf("simulated GPU %d: %w: preset %s has GPUs 0-%d", n, ErrNotFound, s.name, len(s.slots)-1)
		}
		return n, nil
	}
	for slot, d := range s.slots {
		if d.UUID == id {
			return slot, nil
		}
	}
	return 0, fmt.Errorf("simulated GPU %q: %w in preset %s", id, ErrNotFound, s.name)
}

// wire pins the slot's identity and fills in the mock functions go-nvml's
// server leaves unset: PCI info, topology, NVLink and MIG device handles.
func (s *Sim) wire(slot int) {
	d := s.slots[slot]
	d.UUID = "GPU-" + nameUUID(fmt.Sprintf("hotgpu-sim:%s/gpu/%d", s.name, slot))
	d.PciBusID = s.preset.busIDs[slot]
	info := pciInfo(d.PciBusID, d.Config.PciDeviceId)
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return info, nvml.SUCCESS }
	d.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
		return s.pcie(slot, other)
	}
	s.wireNVLinks(d, s.preset.links(slot))
	s.wireMIG(d)
}

func (s *Sim) pcie(slot int, other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
	for o, d := range s.slots {
		switch {
		case d != other:
			continue
		case o == slot:
			return nvml.TOPOLOGY_INTERNAL, nvml.SUCCESS
		default:
			return s.preset.pcie(slot, o), nvml.SUCCESS
		}
	}
	return 0, nvml.ERROR_INVALID_ARGUMENT
}

func (s *Sim) wireNVLinks(d *server.Device, links []simLink) {
	n := s.preset.linkSlots
	d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
		switch {
		case link < 0 || link >= n:
			return 0, nvml.ERROR_INVALID_ARGUMENT
		case link < len(links):
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		default:
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		}
	}
	d.GetNvLinkRemoteDeviceTypeFunc = func(link int) (nvml.IntNvLinkDeviceType, nvml.Return) {
		if link < 0 || link >= len(links) {
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
		return links[link].kind, nvml.SUCCESS
	}
	d.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
		if link < 0 || link >= len(links) {
			return nvml.PciInfo{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return pciInfo(links[link].remote, 0), nvml.SUCCESS
	}
}
