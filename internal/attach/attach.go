// Package attach gives GPUs to running containers and takes them away:
// reserve in the ledger -> grant in the container's device cgroup -> create
// the node inside the container -> record, each step undone if a later one
// fails. It also re-applies grants that a runtime reset and, after a crash,
// finishes or undoes what was half done (grants left Pending).
//
// The mechanics (cgroups, nodes, busy checks) live in internal/hotplug; this
// package only orchestrates them around the ledger.
package attach

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	devices "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// Inventory returns the current GPU inventory.
type Inventory interface{ Inventory() *gpu.Inventory }

// Processes is implemented by an Inventory that can ask the driver which
// processes run on a GPU (NVML on a real node). The busy check and the
// quarantine add them to what /proc shows; an Inventory without it is
// judged by /proc alone.
type Processes interface {
	Processes(uuid string) ([]int, error)
}

// Health reports whether a GPU may be handed out.
type Health interface{ Healthy(uuid string) bool }

// Target names a container (by id, pod or process). It is the API's type:
// what a caller sends is what the Manager resolves.
type Target = api.Target

// Manager performs attach and detach. It is safe for concurrent use;
// operations are serialised because each one reads and then changes both
// the ledger and a cgroup.
type Manager struct {
	mu       sync.Mutex
	inv      Inventory
	health   Health
	ledger   *ledger.Ledger
	registry *registry.Registry
	log      *logrus.Entry
	// fail, when set, is called between steps; tests make it fail (or
	// kill the process) to prove rollback and crash recovery.
	fail func(step string) error
	// v2 keeps each container's cgroup v2 device access: a V2 remembers the
	// program it attached, which is how Has tells a program a runtime put
	// back from ours. (cgroup v1 needs none: devices.list is the state.)
	v2 map[string]hotplug.DeviceAccess
	// detached are containers a GPU was detached from, which RevokeStrays
	// keeps watching for a re-grant while they run.
	detached map[string]ledger.Holder
	// units, when set, is systemd: grants to a container in a systemd
	// scope (unitOf its cgroup) go to the scope's DeviceAllow= too.
	units  Units
	unitOf func(cgroup string) string
}

// New returns a Manager.
func New(inv Inventory, health Health, l *ledger.Ledger, reg *registry.Registry, log *logrus.Entry) *Manager {
	return &Manager{inv: inv, health: health, ledger: l, registry: reg, log: log.WithField("component", "attach"),
		v2: map[string]hotplug.DeviceAccess{}, detached: map[string]ledger.Holder{}}
}

// SetFailpoint installs f, called with the name of each step; a non-nil
// error aborts the operation there. For tests only.
func (m *Manager) SetFailpoint(f func(step string) error) { m.fail = f }

func (m *Manager) step(name string) error {
	if m.fail == nil {
		return nil
	}
	if err := m.fail(name); err != nil {
		return fmt.Errorf("failpoint %s: %w", name, err)
	}
	return nil
}

// resolved is a target turned into everything an operation needs.
type resolved struct {
	holder ledger.Holder
	target *hotplug.Target
	// rules are the container's own device rules, the base of a cgroup v2
	// program (nil on cgroup v1, which needs none).
	rules []*devices.Rule
	// specGPUs is set when rules come from the bundle of a container outside
	// NRI: the GPUs its spec allows are not in the ledger and stay allowed.
	specGPUs bool
}

// ErrNotFound is returned when the target names no running container.
var ErrNotFound = errors.New("container not found")

func (m *Manager) resolve(t Target) (*resolved, error) {
	var c registry.Container
	var err error
	switch {
	case t.PID != 0:
		return m.resolvePID(t.PID)
	case t.ContainerID != "":
		c, err = m.registry.FindID(t.ContainerID)
	case t.PodName != "":
		c, err = m.registry.FindPod(t.PodNamespace, t.PodName, t.ContainerName)
	default:
		return nil, errors.New("no target: give a container id, a pod or a pid")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	if c.PID == 0 {
		return nil, fmt.Errorf("container %s has not started yet (no process to attach to)", ledger.ShortID(c.ID))
	}
	tgt, err := hotplug.TargetFromCgroupsPath(c.PID, c.CgroupsPath)
	if err != nil {
		return nil, fmt.Errorf("failed to find container %s's cgroup: %w", ledger.ShortID(c.ID), err)
	}
	rules, err := baseRules(c.Rules)
	if err != nil {
		return nil, err
	}
	h := ledger.Holder{ContainerID: c.ID, Container: c.Name, PodNamespace: c.PodNamespace,
		PodName: c.PodName, PodUID: c.PodUID, PID: c.PID, Cgroup: c.CgroupsPath}
	return &resolved{holder: h, target: tgt, rules: rules}, nil
}

// resolvePID targets a container hotgpud did not see through NRI (ctr,
// nerdctl, Docker): its cgroup and root come from /proc, its base device
// rules from NRI or its bundle (see specRules). The holder records the
// process's cgroup and start time, which tell a reused pid.
func (m *Manager) resolvePID(pid int) (*resolved, error) {
	if pid <= 1 || pid == os.Getpid() {
		return nil, fmt.Errorf("pid %d is not a container process", pid)
	}
	if hostRoot(pid) {
		// Its /dev is the host's: attach would make nodes there and
		// detach would delete the host's own /dev/nvidiaN.
		return nil, fmt.Errorf("pid %d is not a container process: its root is the host's (give a process inside the container)", pid)
	}
	start, err := hotplug.StartTime(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: pid %d: %v", ErrNotFound, pid, err)
	}
	tgt, err := hotplug.TargetFromPID(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: pid %d: %v", ErrNotFound, pid, err)
	}
	if again, err := hotplug.StartTime(pid); err != nil || again != start {
		return nil, fmt.Errorf("%w: pid %d exited while hotgpu read its cgroup", ErrNotFound, pid)
	}
	id := containerIDOf(tgt, pid)
	r := &resolved{holder: ledger.Holder{ContainerID: id, PID: pid, Cgroup: tgt.Cgroup, StartTime: start}, target: tgt}
	if err := m.specRules(r); err != nil {
		return nil, err
	}
	return r, nil
}

// specRules sets r.rules for a container on cgroup v2, where every program
// hotgpu attaches must keep the container's own devices: NRI's rules when
// NRI knows the container, else those of its OCI bundle. When neither can
// be read the target is refused: runc's defaults alone would take its other
// devices (FUSE, RDMA, a GPU from its spec) away.
func (m *Manager) specRules(r *resolved) error {
	if (r.target.DevicesDir != "" || r.target.UnifiedDir == "") && m.unitOfTarget(r) == "" {
		return nil // cgroup v1 outside systemd: devices.allow needs no base
	}
	id := r.holder.ContainerID
	if c, ok := m.registry.Get(id); ok && c.CgroupsPath != "" {
		if _, err := hotplug.TargetFromCgroupsPath(r.target.PID, c.CgroupsPath); err == nil {
			rules, err := baseRules(c.Rules)
			r.rules = rules
			return err
		}
	}
	rules, err := hotplug.SpecRules(r.target)
	if err != nil {
		return fmt.Errorf("refusing %s (cgroup %s): a cgroup v2 device program must keep the container's own devices, and %w; "+
			"target it by container id or pod once hotgpud sees it through NRI, or run it under containerd, whose bundle has them",
			r.holder, r.target.Cgroup, err)
	}
	r.rules, r.specGPUs = rules, r.holder.External()
	return nil
}

// hostRoot reports whether pid's root directory is the host's: that of pid 1
// (hotgpud runs in the host's PID namespace) or hotgpud's own (it runs on
// the host, or pid 1's root cannot be read).
func hostRoot(pid int) bool {
	var p syscall.Stat_t
	if syscall.Stat("/proc/"+strconv.Itoa(pid)+"/root", &p) != nil {
		return false // TargetFromPID fails on its own
	}
	for _, other := range []string{"/proc/1/root", "/proc/self/root"} {
		var o syscall.Stat_t
		if syscall.Stat(other, &o) == nil && o.Dev == p.Dev && o.Ino == p.Ino {
			return true
		}
	}
	return false
}

// containerIDOf names the container of process pid in the ledger: after its
// cgroup, or after the pid when the cgroup's name is too short to be an id.
func containerIDOf(t *hotplug.Target, pid int) string {
	if cg := cgroupName(t); cg != "" {
		return cg
	}
	return "pid-" + strconv.Itoa(pid)
}

// cgroupName uses the last element of the container's cgroup as its id
// (containerd and Docker name the cgroup after the container: "<id>", or
// "cri-containerd-<id>.scope" and "docker-<id>.scope" under systemd).
func cgroupName(t *hotplug.Target) string {
	dir := t.DevicesDir
	if dir == "" {
		dir = t.UnifiedDir
	}
	i := strings.LastIndex(dir, "/")
	if i < 0 || i == len(dir)-1 {
		return ""
	}
	name := dir[i+1:]
	name = strings.TrimSuffix(name, ".scope")
	for _, prefix := range []string{"cri-containerd-", "docker-"} {
		name = strings.TrimPrefix(name, prefix)
	}
	if len(name) < 6 {
		return ""
	}
	return name
}

func baseRules(rs []registry.DeviceRule) ([]*devices.Rule, error) {
	in := make([]specs.LinuxDeviceCgroup, 0, len(rs))
	for _, r := range rs {
		in = append(in, specs.LinuxDeviceCgroup{Allow: r.Allow, Type: r.Type, Major: r.Major, Minor: r.Minor, Access: r.Access})
	}
	out, err := hotplug.RulesFromSpec(in)
	if err != nil {
		return nil, fmt.Errorf("failed to read the container's device rules: %w", err)
	}
	return append(out, hotplug.DefaultRules()...), nil
}

// checkSpecGPUs refuses GPUs that the own rules of a container outside NRI
// already allow: its program keeps them (the ledger does not know them), so
// a detach could never take them away again.
func checkSpecGPUs(r *resolved, gpus []*gpu.GPU) error {
	if !r.specGPUs {
		return nil
	}
	for _, g := range gpus {
		for _, n := range ownNodes(g) {
			if rule := hotplug.AllowingRule(r.rules, n); rule != nil {
				return fmt.Errorf("GPU %s is already allowed by the container's own device rule %q (from its spec); attached, it could not be detached: use it as it is",
					g.ID(), rule.CgroupString())
			}
		}
	}
	return nil
}

// pick chooses GPUs for an attach: the named ones (which must be free and
// healthy) or count of the best-connected free ones.
func (m *Manager) pick(inv *gpu.Inventory, ids []string, count int) ([]*gpu.GPU, error) {
	return alloc.Choose(inv, available{m.ledger, m.health}, ids, count)
}

// available combines the ledger and health into alloc.Availability.
type available struct {
	*ledger.Ledger
	Health
}
