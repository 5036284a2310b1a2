package deviceplugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// newToken returns 128 random bits, hex: an allocation's claim secret.
func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// maxIDs bounds the IDs one request may carry: no node has more GPUs, and
// the IDs come over a socket.
const maxIDs = 64

// GetDevicePluginOptions tells kubelet to ask for preferred allocations.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// PreStartContainer is not used (not requested in the options).
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// Allocate checks every requested GPU, records the allocation in the ledger
// and tells kubelet how to give the GPUs to the container. Any bad ID fails
// the whole request and records nothing.
func (p *Plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	if p.gate != nil {
		if err := p.gate(); err != nil {
			return nil, status.Errorf(codes.Unavailable, "hotgpud cannot allocate yet: %v", err)
		}
	}
	inv := p.inv.Inventory()
	token, err := newToken()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "failed to make an allocation token: %v", err)
	}
	var all []string
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.GetContainerRequests() {
		uuids, err := p.check(inv, creq.GetDevicesIds())
		if err != nil {
			p.log.WithError(err).Warn("refused allocation")
			return nil, err
		}
		all = append(all, uuids...)
		resp.ContainerResponses = append(resp.ContainerResponses, p.containerResponse(uuids, token))
	}
	slices.Sort(all)
	all = slices.Compact(all)
	if err := p.record(all, token); err != nil {
		p.log.WithError(err).Warn("refused allocation")
		return nil, err
	}
	p.log.WithField("gpus", all).Info("kubelet allocated GPUs")
	return resp, nil
}

// check validates one container's IDs and returns them. A GPU still
// recorded as an earlier kubelet allocation that no running container holds
// is fine (see takesOver); record takes it over.
func (p *Plugin) check(inv *gpu.Inventory, ids []string) (uuids []string, err error) {
	switch {
	case len(ids) == 0:
		return nil, status.Error(codes.InvalidArgument, "allocation request names no devices")
	case len(ids) > maxIDs:
		return nil, status.Errorf(codes.InvalidArgument, "allocation request names %d devices, at most %d allowed", len(ids), maxIDs)
	}
	for _, id := range ids {
		g, ok := inv.ByUUID(id)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument,
				"device %q is not a GPU of this node (%d GPUs); kubelet's checkpoint may predate a hardware change: restart kubelet to re-sync", clip(id), len(inv.GPUs))
		}
		if !p.serves(inv, g.UUID) {
			return nil, status.Errorf(codes.InvalidArgument,
				"device %s (GPU %s) is not one of %s's devices (a GPU in MIG mode is allocated by its MIG devices; see devicePlugin.migStrategy)", clip(id), g.ID(), p.resource)
		}
		if !p.healthy(g) {
			return nil, status.Errorf(codes.FailedPrecondition, "GPU %s (%s) is unhealthy; see `hotgpu health`", g.ID(), g.UUID)
		}
		if cur, held := p.ledger.Lookup(g.UUID); held && !p.takesOver(cur) {
			return nil, status.Errorf(codes.FailedPrecondition,
				"GPU %s (%s) is held by %s; it is not allocatable until released (hotgpu detach)", g.ID(), g.UUID, p.ledger.HeldBy(g.UUID))
		}
		uuids = append(uuids, g.UUID)
	}
	return uuids, nil
}

// takesOver reports whether kubelet allocating the GPU of cur again may
// replace cur. kubelet is the authority on its own allocations: it gives a
// GPU again to another container of the same pod (an app container re-using
// its init container's devices) or because the pod it was for is gone, and
// its new allocation takes over from a holder that no longer runs. A running
// holder is never dispossessed, and only kubelet's own grants are kubelet's.
func (p *Plugin) takesOver(cur ledger.Grant) bool {
	return cur.Reason == ledger.Kubelet && (cur.Holder.ContainerID == "" || !p.running(cur.Holder.ContainerID))
}

// record makes uuids an unclaimed kubelet allocation, replacing the
// allocations kubelet has just given again (see takesOver). A grant still
// bound to a stopped container is first given back to its pod, as NRI's
// StopContainer does; it is then replaced like any allocation no container
// holds.
func (p *Plugin) record(uuids []string, token string) error {
	for _, u := range uuids {
		cur, held := p.ledger.Lookup(u)
		if !held || cur.Holder.ContainerID == "" || !p.takesOver(cur) {
			continue
		}
		if _, _, err := p.ledger.ContainerGone(cur.Holder.ContainerID); err != nil {
			return status.Errorf(codes.Internal, "failed to record allocation: %v", err)
		}
		p.log.WithFields(map[string]any{"gpu": u, "stopped": cur.Holder.String()}).
			Info("kubelet allocated a GPU of a stopped container again: the new allocation takes it over")
	}
	err := p.ledger.Acquire(ledger.Holder{Token: token}, ledger.Kubelet, ledger.Active, uuids...)
	switch {
	case errors.Is(err, ledger.ErrHeld):
		return status.Errorf(codes.FailedPrecondition, "%v; it is not allocatable until released", err)
	case err != nil:
		return status.Errorf(codes.Internal, "failed to record allocation: %v", err)
	}
	return nil
}

// containerResponse gives the GPUs as CDI devices and env, and the
// allocation's token as a container annotation, which kubelet sets on the
// container and pods cannot forge.
func (p *Plugin) containerResponse(uuids []string, token string) *pluginapi.ContainerAllocateResponse {
	r := &pluginapi.ContainerAllocateResponse{
		Envs:        map[string]string{EnvVisibleDevices: strings.Join(uuids, ",")},
		Annotations: map[string]string{policy.AllocationAnnotation: token},
	}
	for _, u := range uuids {
		r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: p.cdiKind + "=" + u})
	}
	return r
}

// GetPreferredAllocation picks, for each container, the best-connected set
// of the available GPUs that includes the must-include ones (alloc.Pick:
// exact, microseconds for 8 GPUs), and, for a GPUAttachment's holder pod,
// best connected to the GPUs its target already holds (WithNear).
func (p *Plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	inv := p.inv.Inventory()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, creq := range req.GetContainerRequests() {
		ids, err := p.prefer(inv, creq)
		if err != nil {
			p.log.WithError(err).Warn("no preferred allocation")
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

func (p *Plugin) prefer(inv *gpu.Inventory, req *pluginapi.ContainerPreferredAllocationRequest) ([]string, error) {
	if len(req.GetAvailableDeviceIDs()) > maxIDs {
		return nil, status.Errorf(codes.InvalidArgument, "%d available devices listed, at most %d allowed", len(req.GetAvailableDeviceIDs()), maxIDs)
	}
	if p.servesMIG(inv) {
		return preferMIG(inv, req)
	}
	avail, err := indices(inv, req.GetAvailableDeviceIDs())
	if err != nil {
		return nil, err
	}
	must, err := indices(inv, req.GetMustIncludeDeviceIDs())
	if err != nil {
		return nil, err
	}
	picked, err := alloc.PickNear(inv, avail, must, p.nearOf(inv, int(req.GetAllocationSize())), int(req.GetAllocationSize()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "cannot choose %d GPUs: %v", req.GetAllocationSize(), err)
	}
	out := make([]string, len(picked))
	for i, idx := range picked {
		out[i] = byIndex(inv, idx).UUID
	}
	return out, nil
}

// nearOf returns the indices of the GPUs an allocation of size should be
// close to (WithNear), leaving out any this node does not have.
func (p *Plugin) nearOf(inv *gpu.Inventory, size int) []int {
	if p.near == nil {
		return nil
	}
	var out []int
	for _, u := range p.near(size) {
		if g, ok := inv.ByUUID(u); ok {
			out = append(out, g.Index)
		}
	}
	return out
}

func indices(inv *gpu.Inventory, uuids []string) ([]int, error) {
	out := make([]int, 0, len(uuids))
	for _, u := range uuids {
		g, ok := inv.ByUUID(u)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "device %q is not a GPU of this node", clip(u))
		}
		out = append(out, g.Index)
	}
	return out, nil
}

func byIndex(inv *gpu.Inventory, idx int) *gpu.GPU {
	for i := range inv.GPUs {
		if inv.GPUs[i].Index == idx {
			return &inv.GPUs[i]
		}
	}
	return &gpu.GPU{}
}

// clip keeps IDs from the socket short in errors and logs.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// servesMIG reports whether the plugin advertises MIG devices, which share
// their parents' topology: there is no link between them to choose by.
func (p *Plugin) servesMIG(inv *gpu.Inventory) bool {
	return slices.ContainsFunc(p.selector(inv), func(g *gpu.GPU) bool { return g.Instance != nil })
}

// preferMIG picks the must-include MIG devices, then the available ones in
// GPU order, so that one GPU's devices fill up before the next is broken
// into.
func preferMIG(inv *gpu.Inventory, req *pluginapi.ContainerPreferredAllocationRequest) ([]string, error) {
	n := int(req.GetAllocationSize())
	out := slices.Clone(req.GetMustIncludeDeviceIDs())
	var avail []*gpu.GPU
	for _, id := range req.GetAvailableDeviceIDs() {
		g, ok := inv.ByUUID(id)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "device %q is not a device of this node", clip(id))
		}
		avail = append(avail, g)
	}
	slices.SortStableFunc(avail, func(a, b *gpu.GPU) int { return strings.Compare(a.ID(), b.ID()) })
	for _, g := range avail {
		if len(out) >= n {
			break
		}
		if !slices.Contains(out, g.UUID) {
			out = append(out, g.UUID)
		}
	}
	if len(out) != n {
		return nil, status.Errorf(codes.InvalidArgument, "cannot choose %d MIG devices among %d available", n, len(avail))
	}
	return out, nil
}
