package nvml

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

func TestTopologyDGXA100(t *testing.T) {
	inv := inventory(t, newSimProvider(t, "dgxa100"))
	for _, g := range inv.GPUs {
		for _, p := range g.Peers {
			if p.NVLinks != 12 {
				t.Errorf("GPU %d -> %d: %d NVLinks, want 12 through NVSwitch", g.Index, p.Index, p.NVLinks)
			}
		}
	}
	if p, _ := inv.GPUs[0].Peer(1); p.PCIe != gpu.LinkPCIeMulti {
		t.Errorf("GPU 0 -> 1 PCIe %v, want PXB", p.PCIe)
	}
	if p, _ := inv.GPUs[0].Peer(7); p.PCIe != gpu.LinkSystem {
		t.Errorf("GPU 0 -> 7 PCIe %v, want SYS", p.PCIe)
	}
}

func TestTopologyPCIe8(t *testing.T) {
	inv := inventory(t, newSimProvider(t, "pcie8"))
	tests := []struct {
		a, b    int
		nvlinks int
		pcie    gpu.Link
	}{
		{0, 1, 4, gpu.LinkPCIeSwitch},
		{1, 0, 4, gpu.LinkPCIeSwitch},
		{6, 7, 4, gpu.LinkPCIeSwitch},
		{0, 2, 0, gpu.LinkPCIeMulti},
		{3, 1, 0, gpu.LinkPCIeMulti},
		{4, 6, 0, gpu.LinkNUMANode},
		{7, 5, 0, gpu.LinkNUMANode},
		{0, 4, 0, gpu.LinkSystem},
		{7, 2, 0, gpu.LinkSystem},
	}
	for _, tt := range tests {
		t.Run(slot(tt.a)+"-"+slot(tt.b), func(t *testing.T) {
			p, ok := inv.GPUs[tt.a].Peer(tt.b)
			if !ok || p.NVLinks != tt.nvlinks || p.PCIe != tt.pcie {
				t.Fatalf("peer = %+v (found %v), want %d NVLinks over %v", p, ok, tt.nvlinks, tt.pcie)
			}
		})
	}
}

func TestNormalizeBusID(t *testing.T) {
	tests := map[string]string{
		"00000000:07:00.0":  "0000:07:00.0",
		"0000:0F:00.0":      "0000:0f:00.0",
		" 00000001:B7:00.0": "0001:b7:00.0",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := normalizeBusID(in); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestNVLinkProbingContinuesPastNotSupported: a link that answers
// NOT_SUPPORTED (not wired on this board) does not hide the links after it.
func TestNVLinkProbingContinuesPastNotSupported(t *testing.T) {
	p := newSimProvider(t, "pcie8")
	for _, s := range []int{0, 1} { // the NVLink bridge pair: 4 links each
		d := p.sim.Slot(s)
		state, kind, remote := d.GetNvLinkStateFunc, d.GetNvLinkRemoteDeviceTypeFunc, d.GetNvLinkRemotePciInfoFunc
		// Link 0 is not supported; the real links move up one.
		d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link == 0 {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return state(link - 1)
		}
		d.GetNvLinkRemoteDeviceTypeFunc = func(link int) (nvml.IntNvLinkDeviceType, nvml.Return) { return kind(link - 1) }
		d.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) { return remote(link - 1) }
	}
	inv := inventory(t, p)
	if peer, _ := inv.GPUs[0].Peer(1); peer.NVLinks != 4 {
		t.Fatalf("GPU 0 -> 1: %d NVLinks, want 4 (probing stopped at the unsupported link 0)", peer.NVLinks)
	}
}
