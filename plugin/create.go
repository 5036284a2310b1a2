package plugin

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// request is what one container gets: GPUs and why.
type request struct {
	gpus   []*gpu.GPU
	reason ledger.Reason
	// inject is false when the runtime already injects the nodes (CDI).
	inject bool
	// source names the input for error messages.
	source string
}

// CreateContainer decides the container's GPUs, records them in the ledger
// (annotation GPUs charged to the namespace's quota first, on a cluster)
// and returns the adjustment that gives them to it. Any bad, unsatisfiable
// or over-quota request fails the creation and leaves the ledger unchanged.
func (p *Plugin) CreateContainer(ctx context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	log := p.log.WithFields(map[string]any{"pod": pod.GetNamespace() + "/" + pod.GetName(), "container": c.GetName()})
	p.registry.Put(toRegistry(pod, c))
	inv := p.inv.Inventory()
	req, err := p.decide(inv, pod, c)
	var hot bool
	if err == nil {
		hot, err = p.policy.Hotplug(pod.GetNamespace(), pod.GetAnnotations())
	}
	if err != nil {
		log.WithError(err).Warn("refused container")
		return nil, nil, err
	}
	if req == nil && hot {
		return p.hotplugReady(log, c), nil, nil
	}
	if req == nil {
		return nil, nil, nil
	}
	uuids := uuidsOf(req.gpus)
	if req.reason == ledger.Kubelet && p.isHolder(pod) && p.realised(pod, uuids) {
		// kubelet creates a holder's container again (its pause process
		// died, the node rebooted) after its GPUs were moved: the target
		// keeps them, the holder starts without them, as it first did
		log.WithField("gpus", uuids).Info("GPUAttachment holder created again: its kubelet GPUs stay in the attachment's target")
		return holderAdjustment(inv, c, req.gpus), nil, nil
	}
	if err := p.record(ctx, pod, c, req); err != nil {
		log.WithError(err).Warn("refused container")
		return nil, nil, err
	}
	log.WithFields(map[string]any{"gpus": uuids, "reason": req.reason}).Info("GPUs assigned")
	if err := p.step("create-recorded"); err != nil {
		return nil, nil, err
	}
	if req.reason == ledger.Kubelet && p.isHolder(pod) {
		// the allocation is moved into the attachment's target by the
		// agent: the holder's pause container gets none of it
		log.WithField("gpus", uuids).Info("GPUAttachment holder: its kubelet GPUs are moved to the attachment's target, not given to it")
		return holderAdjustment(inv, c, req.gpus), nil, nil
	}
	if !req.inject {
		return nil, nil, nil
	}
	adj := adjustment(inv, c, req.gpus)
	p.addDriver(adj, c)
	return adj, nil, nil
}

// realised reports whether every GPU of uuids is held by a live attach that
// realises pod's kubelet allocation (a GPUAttachment's target, which the
// holder pod's GPUs were moved to).
func (p *Plugin) realised(pod *api.PodSandbox, uuids []string) bool {
	for _, u := range uuids {
		g, ok := p.ledger.Lookup(u)
		if !ok || g.Reason != ledger.Attach || g.Holder.Realises == "" || g.Holder.Realises != pod.GetUid() {
			return false
		}
	}
	return len(uuids) > 0
}

// record charges annotation GPUs to the namespace's quota (plugin/charge.go)
// and then records the grant; a charge made for GPUs that were taken
// meanwhile is taken back.
func (p *Plugin) record(ctx context.Context, pod *api.PodSandbox, c *api.Container, req *request) error {
	uuids := uuidsOf(req.gpus)
	var charged bool
	if req.reason == ledger.Annotation {
		var err error
		if charged, err = p.charge(ctx, pod, c, len(uuids)); err != nil {
			return fmt.Errorf("%s: %w", req.source, err)
		}
	}
	if err := p.ledger.Acquire(holderOf(pod, c), req.reason, ledger.Active, uuids...); err != nil {
		if charged {
			p.uncharge(ctx, pod, c)
		}
		return fmt.Errorf("%s: %w", req.source, err)
	}
	return nil
}

// hotplugReady answers a container that asks no GPU: one whose pod carries
// policy.HotplugAnnotation gets the driver's user-space now, so that a GPU
// attached later is usable by CUDA (live attach adds only device nodes: it
// cannot mount into a running container). It gets no device node and no
// cgroup rule, and nothing is recorded in the ledger: attach adds the GPU
// and control nodes, and detach takes them away again.
func (p *Plugin) hotplugReady(log *logrus.Entry, c *api.Container) *api.ContainerAdjustment {
	adj := &api.ContainerAdjustment{}
	if !p.addDriver(adj, c) {
		log.Warn("hotplug container: this node has no driver files to give; GPUs attached later will have device nodes only")
		return nil
	}
	log.Info("driver files given for a later attach")
	return adj
}

// decide finds the container's request: the kubelet allocation (CDI devices
// or visible-devices env) or else the pod annotation.
func (p *Plugin) decide(inv *gpu.Inventory, pod *api.PodSandbox, c *api.Container) (*request, error) {
	kube, err := p.kubeletRequest(inv, pod, c)
	if err != nil {
		return nil, err
	}
	areq, asked, err := p.policy.FromAnnotations(pod.GetNamespace(), c.GetName(), pod.GetAnnotations())
	if err != nil {
		return nil, err
	}
	key := policy.AnnotationKey(c.GetName())
	if kube != nil {
		if asked {
			return nil, fmt.Errorf("annotation %s: the container already has %d GPU(s) from kubelet; "+
				"ask for GPUs one way, not both", key, len(kube.gpus))
		}
		return kube, nil
	}
	if !asked {
		return nil, nil
	}
	gpus, err := p.choose(inv, areq)
	if err != nil {
		return nil, fmt.Errorf("annotation %s=%q: %w", key, areq.String(), err)
	}
	return &request{gpus: gpus, reason: ledger.Annotation, inject: true, source: "annotation " + key}, nil
}

// kubeletRequest reads the allocation kubelet passed in: our CDI devices
// (injected by the runtime itself) or the visible-devices env (which we
// inject). Env GPUs count only if the ledger shows kubelet allocated them:
// images set NVIDIA_VISIBLE_DEVICES themselves, and env is not proof. A
// confirmed holder pod's moved GPUs are its allocation too (realised in the
// target): CreateContainer gives its container none of them.
func (p *Plugin) kubeletRequest(inv *gpu.Inventory, pod *api.PodSandbox, c *api.Container) (*request, error) {
	if gpus, err := p.cdiGPUs(inv, c); err != nil || len(gpus) > 0 {
		if err != nil {
			return nil, err
		}
		return &request{gpus: gpus, reason: ledger.Kubelet, source: "CDI devices"}, nil
	}
	ids, from, err := policy.VisibleDevices(c.GetEnv())
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	gpus, err := inv.LookupAll(ids)
	if err != nil {
		return nil, fmt.Errorf("env %s: %w", from, err)
	}
	for _, g := range gpus {
		if !p.kubeletAllocated(g.UUID, pod, c) && !(p.isHolder(pod) && p.realised(pod, []string{g.UUID})) {
			if from == policy.EnvNVIDIA {
				p.log.WithField("container", c.GetName()).Debug("NVIDIA_VISIBLE_DEVICES is not a hotgpu allocation; ignored")
				return nil, nil
			}
			return nil, fmt.Errorf("env %s names GPU %d, which kubelet did not allocate to this pod", from, g.Index)
		}
	}
	return &request{gpus: gpus, reason: ledger.Kubelet, inject: true, source: "env " + from}, nil
}

func (p *Plugin) kubeletAllocated(uuid string, pod *api.PodSandbox, c *api.Container) bool {
	g, ok := p.ledger.Lookup(uuid)
	if !ok || g.Reason != ledger.Kubelet {
		return false
	}
	h := g.Holder
	if !h.Accepts(c.GetAnnotations()[policy.AllocationAnnotation]) {
		return false // env names the GPU, but kubelet did not allocate it to this container
	}
	return h.ContainerID == c.GetId() || (h.ContainerID == "" && (h.PodUID == "" || h.PodUID == pod.GetUid()))
}

// cdiGPUs maps the container's CDI devices of our kind to GPUs.
func (p *Plugin) cdiGPUs(inv *gpu.Inventory, c *api.Container) ([]*gpu.GPU, error) {
	var out []*gpu.GPU
	for _, d := range c.GetCDIDevices() {
		kind, name, ok := strings.Cut(d.GetName(), "=")
		if !ok || kind != p.vendor {
			continue
		}
		var gpus []*gpu.GPU
		switch {
		case name == "all":
			for i := range inv.GPUs {
				if inv.GPUs[i].Lost == "" { // as the spec's "all" device
					gpus = append(gpus, &inv.GPUs[i])
				}
			}
		default:
			g, err := cdiGPU(inv, name)
			if err != nil {
				return nil, fmt.Errorf("CDI device %s: %w", d.GetName(), err)
			}
			gpus = append(gpus, g)
		}
		for _, g := range gpus { // "0" and "all" together name GPU 0 once
			if !slices.ContainsFunc(out, func(o *gpu.GPU) bool { return o.UUID == g.UUID }) {
				out = append(out, g)
			}
		}
	}
	return out, nil
}

// cdiGPU maps one of our CDI device names to its device: an index, a UUID,
// or a MIG device ("<gpu>:<mig>" or its MIG UUID), which is held on its
// own, not its parent. The names are the ones cdi.Generate publishes; a MIG
// name that does not exist is an error, not its parent GPU.
func cdiGPU(inv *gpu.Inventory, name string) (*gpu.GPU, error) {
	return inv.Lookup(name)
}

// choose resolves an annotation request against free, healthy GPUs.
func (p *Plugin) choose(inv *gpu.Inventory, req policy.Request) ([]*gpu.GPU, error) {
	return alloc.Choose(inv, available{p.ledger, p.health}, req.IDs, req.Count)
}

// available combines the ledger and health into alloc.Availability.
type available struct {
	*ledger.Ledger
	Health
}

// adjustment adds the GPU nodes and the control nodes the container lacks,
// one cgroup allow rule per node (NRI adds the rule with the device; never a
// wildcard), and NVIDIA_VISIBLE_DEVICES with the UUIDs.
func adjustment(inv *gpu.Inventory, c *api.Container, gpus []*gpu.GPU) *api.ContainerAdjustment {
	adj := &api.ContainerAdjustment{}
	have := map[string]bool{}
	for _, d := range c.GetLinux().GetDevices() {
		have[d.GetPath()] = true
	}
	nodes := make([]gpu.DeviceNode, 0, len(gpus)+len(inv.Control))
	for _, g := range gpus {
		nodes = gpu.AppendNodes(nodes, *g)
	}
	nodes = append(nodes, inv.Control...)
	mode := os.FileMode(gpu.NodeMode)
	for _, n := range nodes {
		if have[n.Path] {
			continue
		}
		adj.AddDevice(&api.LinuxDevice{
			Path: n.Path, Type: "c", Major: n.Major, Minor: n.Minor, FileMode: api.FileMode(mode),
		})
	}
	adj.AddEnv(policy.EnvNVIDIA, strings.Join(uuidsOf(gpus), ","))
	return adj
}

// holderAdjustment takes away from a holder container the GPU nodes the
// runtime injected for its CDI devices, and the visible-devices env.
func holderAdjustment(inv *gpu.Inventory, c *api.Container, gpus []*gpu.GPU) *api.ContainerAdjustment {
	adj := &api.ContainerAdjustment{}
	have := map[string]bool{}
	for _, d := range c.GetLinux().GetDevices() {
		have[d.GetPath()] = true
	}
	var nodes []gpu.DeviceNode
	for _, g := range gpus {
		nodes = gpu.AppendNodes(nodes, *g)
	}
	for _, n := range nodes {
		if have[n.Path] {
			adj.RemoveDevice(n.Path)
		}
	}
	adj.RemoveEnv(policy.EnvNVIDIA)
	return adj
}

func uuidsOf(gpus []*gpu.GPU) []string {
	out := make([]string, len(gpus))
	for i, g := range gpus {
		out[i] = g.UUID
	}
	return out
}
