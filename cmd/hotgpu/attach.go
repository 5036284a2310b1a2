package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// defaultSocket is hotgpud's API socket unless --socket says otherwise.
const defaultSocket = api.DefaultSocket

func init() {
	register(&command{Name: "attach", Summary: "give a running container GPUs (no restart)", Run: runAttach})
	register(&command{Name: "detach", Summary: "take GPUs away from a running container", Run: runDetach})
}

const attachHelp = `Usage: hotgpu attach TARGET (--count N [--mig-profile P] | --gpu ID[,ID...]) [--socket PATH]

Give a running container GPUs without restarting it. hotgpud grants each GPU
in the container's device cgroup (cgroup v1 or v2) and creates /dev/nvidiaN
inside it (plus /dev/nvidiactl and /dev/nvidia-uvm with its first GPU); no
mknod is needed in the image. If any step fails, every step is undone. In a
container whose /dev is shared with the host (-v /dev:/dev, a hostPath /dev)
it only grants the devices: the host's nodes are used, none is made there.

CUDA also needs the driver's libraries: unless the container has them (made
with a GPU, or with the pod annotation gpus.hotgpu.dev/hotplug: "true"),
hotgpud mounts them into it read-only, with their links, and mounts a linker
cache that lists them over the container's /etc/ld.so.cache (its own file is
left unchanged underneath), and says so ("driver: ..."). A read-only root
cannot take them: it gets the GPU and a note; create such containers with the
hotplug annotation. Detach leaves the libraries; detaching the last GPU
unmounts the linker cache.

A MIG device is a GPU of its own: name it "0:1" (GPU 0's MIG device 1, as
'hotgpu ls' and the CDI spec name it) or by its MIG UUID, or ask for
--count N --mig-profile 1g.5gb. The container gets its parent's node and
exactly its own /dev/nvidia-caps capability nodes. A GPU in MIG mode is
never attached whole; a GPU is busy while any of its MIG devices is held.

TARGET is one of:
  --container ID                 CRI/NRI container id (or a unique prefix)
  --pod NS/NAME [--container-name NAME]
  --pid PID                      any container (ctr, nerdctl, Docker) by a process in it

Examples:
  hotgpu attach --pod ml/trainer --count 2
  hotgpu attach --container 3f2a9c --gpu 0,GPU-8ac5...
  hotgpu attach --pid 41234 --gpu 1
  hotgpu attach --pod ml/infer --gpu 0:1
  hotgpu attach --pod ml/infer --count 2 --mig-profile 1g.5gb
`

const detachHelp = `Usage: hotgpu detach TARGET (--gpu ID[,ID...] | --all) [--force] [--socket PATH]

Take GPUs away from a running container: the cgroup rule is revoked and the
node removed; detaching the last GPU also removes the control nodes and
unmounts the linker cache attach mounted (the container's own
/etc/ld.so.cache shows again). Only
nodes that hotgpu made (the very same inode) are removed; any other file at
their paths, such as the host's own nodes, is left in place. A GPU that any
process of the node has open or mapped (in the container, a sub-cgroup, or one
it passed the fd to) is refused unless --force; a GPU still held after a forced
detach is quarantined: no one gets it until the holder lets go. GPUs that
kubelet allocated stay with their pod. TARGET is as for 'hotgpu attach'.

Examples:
  hotgpu detach --pod ml/trainer --all
  hotgpu detach --pid 41234 --gpu 1 --force
  hotgpu detach --pod ml/infer --gpu 0:1
`

type targetFlags struct {
	container, pod, name string
	pid                  int
}

func (t *targetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.container, "container", "", "CRI/NRI container id or unique prefix")
	fs.StringVar(&t.pod, "pod", "", "pod as NAMESPACE/NAME")
	fs.StringVar(&t.name, "container-name", "", "container of the pod (when it has several)")
	fs.IntVar(&t.pid, "pid", 0, "a process of the container, best its main one: the grant is released when it exits")
}

func (t *targetFlags) target() (api.Target, error) {
	n := 0
	for _, set := range []bool{t.container != "", t.pod != "", t.pid != 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return api.Target{}, usageErrorf("give exactly one of --container, --pod or --pid")
	}
	if t.name != "" && t.pod == "" {
		return api.Target{}, usageErrorf("--container-name goes with --pod")
	}
	out := api.Target{ContainerID: t.container, PID: t.pid, ContainerName: t.name}
	if t.pod != "" {
		ns, name, ok := strings.Cut(t.pod, "/")
		if !ok || ns == "" || name == "" {
			return api.Target{}, usageErrorf("--pod must be NAMESPACE/NAME, got %q", t.pod)
		}
		out.PodNamespace, out.PodName = ns, name
	}
	return out, nil
}

func splitIDs(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// opFlags are the flags attach and detach share: the target, --socket, -o.
type opFlags struct {
	targetFlags
	socket, output *string
}

func newOpFlags(fs *flag.FlagSet) *opFlags {
	o := &opFlags{}
	o.targetFlags.register(fs)
	o.socket, o.output = apiFlags(fs, "text", "json")
	return o
}

// parse parses args and returns the target; every usage error is found
// here, before anything is sent to hotgpud.
func (o *opFlags) parse(fs *flag.FlagSet, args []string, s stdio) (api.Target, error) {
	if err := parseFlags(fs, args, s); err != nil {
		return api.Target{}, err
	}
	if err := checkFormat(*o.output, "text", "json"); err != nil {
		return api.Target{}, err
	}
	return o.target()
}

func runAttach(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu attach", attachHelp)
	o := newOpFlags(fs)
	count := fs.Int("count", 0, "number of GPUs (hotgpu picks the best-connected free ones)")
	ids := fs.String("gpu", "", "GPU indices or UUIDs, MIG devices as GPU:MIG (\"0:1\") or MIG UUIDs, comma-separated")
	profile := fs.String("mig-profile", "", "with --count: MIG devices of this profile (\"1g.5gb\") instead of whole GPUs")
	t, err := o.parse(fs, args, s)
	if err != nil {
		return err
	}
	if (*count > 0) == (*ids != "") {
		return usageErrorf("give either --count or --gpu")
	}
	if *profile != "" && *count == 0 {
		return usageErrorf("--mig-profile goes with --count")
	}
	res, err := api.NewClient(*o.socket).Attach(ctx, api.AttachRequest{Target: t, IDs: splitIDs(*ids), Count: *count, MIGProfile: *profile})
	if err != nil {
		return err
	}
	return printResult(s, *o.output, "attached", res)
}

func runDetach(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu detach", detachHelp)
	o := newOpFlags(fs)
	ids := fs.String("gpu", "", "GPU indices or UUIDs, MIG devices as GPU:MIG (\"0:1\") or MIG UUIDs, comma-separated")
	all := fs.Bool("all", false, "every GPU attached to the container")
	force := fs.Bool("force", false, "detach even if a process has the GPU open (it is then quarantined until the process lets go)")
	t, err := o.parse(fs, args, s)
	if err != nil {
		return err
	}
	if *all == (*ids != "") {
		return usageErrorf("give either --gpu or --all")
	}
	res, err := api.NewClient(*o.socket).Detach(ctx, api.DetachRequest{Target: t, IDs: splitIDs(*ids), All: *all, Force: *force})
	if err != nil {
		return err
	}
	return printResult(s, *o.output, "detached", res)
}

// printResult says what was done, or writes it as JSON with -o json.
func printResult(s stdio, output, verb string, res *api.Result) error {
	if output == "json" {
		return printJSON(s.out, res)
	}
	prep := "to"
	if verb == "detached" {
		prep = "from"
	}
	for _, g := range res.GPUs {
		if g.Instance != nil {
			fmt.Fprintf(s.out, "%s MIG device %s (%s, %s, /dev/nvidia%d and %s) %s %s\n", verb, g.ID(), g.Instance.Profile, g.UUID, g.Minor, capsPaths(g.Instance.Caps), prep, res.Holder)
			continue
		}
		fmt.Fprintf(s.out, "%s GPU %d (%s, /dev/nvidia%d) %s %s\n", verb, g.Index, g.UUID, g.Minor, prep, res.Holder)
	}
	if res.Nodes != "" {
		fmt.Fprintf(s.out, "nodes: %s\n", res.Nodes)
	}
	if res.Driver != "" {
		fmt.Fprintf(s.out, "driver: %s\n", res.Driver)
	}
	for _, g := range res.Quarantined {
		fmt.Fprintf(s.out, "quarantined GPU %s: a process still holds it; no one gets it until it lets go (see hotgpu ls)\n", g.ID())
	}
	return nil
}

func capsPaths(caps []gpu.DeviceNode) string {
	paths := make([]string, len(caps))
	for i, c := range caps {
		paths[i] = c.Path
	}
	return strings.Join(paths, ", ")
}
