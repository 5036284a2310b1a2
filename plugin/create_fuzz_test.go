package plugin

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// memStore keeps the ledger in memory: fuzzing must not fsync per input.
type memStore struct{ grants []ledger.Grant }

func (m *memStore) Load() ([]ledger.Grant, error) { return m.grants, nil }
func (m *memStore) Save(g []ledger.Grant) error   { m.grants = g; return nil }

// migInventory is 4 GPUs; GPU 1 is in MIG mode with two instances.
func migInventory() *gpu.Inventory {
	inv := testInventory(4)
	inv.GPUs[1].MIGEnabled = true
	for i := 0; i < 2; i++ {
		inv.GPUs[1].MIG = append(inv.GPUs[1].MIG, gpu.MIGDevice{Parent: 1, Index: i, GI: i, CI: 0,
			UUID: fmt.Sprintf("MIG-%08d-1111-2222-3333-444444444444", i)})
	}
	return inv
}

func fuzzPlugin(t testing.TB, inv *gpu.Inventory) (*Plugin, *ledger.Ledger) {
	t.Helper()
	l, err := ledger.New(&memStore{})
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	p, err := New(staticInventory{inv}, l, registry.New(),
		WithPolicy(policy.Policy{Namespaces: []string{"ml"}, MaxPerContainer: 2}),
		WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	return p, l
}

// FuzzCDIGPUs: CDI device names reach the plugin from kubelet and from
// whoever runs the container (--device). Every name is either refused or
// mapped to GPUs of the inventory, each at most once; names of other kinds
// are ignored.
func FuzzCDIGPUs(f *testing.F) {
	inv := migInventory()
	for _, s := range []string{
		"nvidia.com/gpu=0", "nvidia.com/gpu=all", "nvidia.com/gpu=1:0", "nvidia.com/gpu=" + inv.GPUs[2].UUID,
		"nvidia.com/gpu=" + inv.GPUs[1].MIG[1].UUID, "nvidia.com/gpu=0\nnvidia.com/gpu=all", "nvidia.com/gpu=all\nnvidia.com/gpu=all",
		"vendor.com/x=0", "nvidia.com/gpu=../../dev/sda", "nvidia.com/gpu=/dev/nvidia1", "nvidia.com/gpu=9", "nvidia.com/gpu=",
		"nvidia.com/gpu=-1", "nvidia.com/gpu=+1", "nvidia.com/gpu=1:", "nvidia.com/gpu=:0",
	} {
		f.Add(s)
	}
	p, _ := fuzzPlugin(f, inv)
	f.Fuzz(func(t *testing.T, names string) {
		c := &api.Container{Id: "c", Name: "app"}
		for _, n := range strings.Split(names, "\n") {
			c.CDIDevices = append(c.CDIDevices, &api.CDIDevice{Name: n})
		}
		gpus, err := p.cdiGPUs(inv, c)
		if err != nil {
			if gpus != nil {
				t.Fatalf("%q: GPUs and an error", names)
			}
			return
		}
		seen := map[string]bool{}
		for _, g := range gpus {
			if _, ok := inv.ByUUID(g.UUID); !ok {
				t.Fatalf("%q: GPU %s is not in the inventory", names, g.UUID)
			}
			if seen[g.UUID] {
				t.Fatalf("%q: GPU %d listed twice", names, g.Index)
			}
			seen[g.UUID] = true
		}
		if !strings.Contains(names, "nvidia.com/gpu=") && len(gpus) > 0 {
			t.Fatalf("%q: devices of another kind became GPUs %v", names, uuidsOf(gpus))
		}
	})
}

// TestCDIGPUsEveryPublishedName: every device name hotgpu's CDI spec
// publishes (index, UUID, MIG "i:j", MIG UUID, "all") is understood by the
// NRI plugin, so a container started with any of them is recorded in the
// ledger instead of failing or going unrecorded. A MIG name is the MIG
// device, held on its own, not its parent.
func TestCDIGPUsEveryPublishedName(t *testing.T) {
	inv := migInventory()
	p, _ := fuzzPlugin(t, inv)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"1", []string{"1"}},
		{inv.GPUs[2].UUID, []string{"2"}},
		{"1:1", []string{"1:1"}},
		{inv.GPUs[1].MIG[0].UUID, []string{"1:0"}},
		{"all", []string{"0", "1", "2", "3"}},
	} {
		c := &api.Container{Id: "c", CDIDevices: []*api.CDIDevice{{Name: "nvidia.com/gpu=" + tc.name}}}
		gpus, err := p.cdiGPUs(inv, c)
		if err != nil {
			t.Errorf("nvidia.com/gpu=%s: %v", tc.name, err)
			continue
		}
		var got []string
		for _, g := range gpus {
			got = append(got, g.ID())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("nvidia.com/gpu=%s: GPUs %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzCreateContainer drives the whole CreateContainer decision with hostile
// pod annotations, env, namespace and CDI devices, against a node where GPU 0
// already belongs to another container. A refused container changes nothing;
// an accepted one gets only nodes of GPUs the ledger now gives it (never
// another holder's GPU, never a path from the input, never more than the
// policy allows by annotation).
func FuzzCreateContainer(f *testing.F) {
	for _, s := range [][4]string{
		{"ml", "2", "", ""}, {"ml", "0", "", ""}, {"default", "1", "", ""}, {"ml", "", "HOTGPU_VISIBLE_DEVICES=0", ""},
		{"ml", "", "NVIDIA_VISIBLE_DEVICES=all", ""}, {"ml", "", "", "nvidia.com/gpu=0"}, {"ml", "1", "", "nvidia.com/gpu=2"},
		{"ml", "3,../x", "", ""}, {"ml", "", "HOTGPU_VISIBLE_DEVICES=/dev/nvidia0", ""}, {"ml", "", "", "nvidia.com/gpu=all"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, ns, annotation, env, cdiName string) {
		inv := migInventory()
		p, l := fuzzPlugin(t, inv)
		other := ledger.Holder{ContainerID: "other", PodUID: "uid-other"}
		if err := l.Acquire(other, ledger.Annotation, ledger.Active, inv.GPUs[0].UUID); err != nil {
			t.Fatal(err)
		}
		before := fmt.Sprint(l.Grants())
		ann := map[string]string{}
		if annotation != "" {
			ann[policy.AnnotationKey("app")] = annotation
		}
		sb := &api.PodSandbox{Id: "sb", Name: "p", Namespace: ns, Uid: "uid-p", Annotations: ann}
		c := &api.Container{Id: "cid", Name: "app", PodSandboxId: "sb", Env: []string{env}, Linux: &api.LinuxContainer{}}
		if cdiName != "" {
			c.CDIDevices = []*api.CDIDevice{{Name: cdiName}}
		}
		adj, _, err := p.CreateContainer(context.Background(), sb, c)
		if err != nil {
			if after := fmt.Sprint(l.Grants()); after != before {
				t.Fatalf("refused container changed the ledger:\n%s\n->\n%s", before, after)
			}
			return
		}
		if g, _ := l.Lookup(inv.GPUs[0].UUID); g.Holder.ContainerID != "other" {
			t.Fatalf("GPU 0 was taken from its holder: %+v", g)
		}
		mine := l.Container("cid")
		allowed := map[string]bool{}
		for _, n := range grantedNodes(inv, mine) {
			allowed[n.Path] = true
		}
		for _, d := range adj.GetLinux().GetDevices() {
			if !allowed[d.GetPath()] || d.GetMajor() == 0 {
				t.Fatalf("injected %s (%d:%d), which the ledger does not give the container (%v)", d.GetPath(), d.GetMajor(), d.GetMinor(), mine)
			}
		}
		for _, g := range mine {
			if g.Reason == ledger.Annotation && (ns != "ml" || len(mine) > 2) {
				t.Fatalf("annotation %q in namespace %q granted %d GPUs", annotation, ns, len(mine))
			}
		}
	})
}

// grantedNodes are the device nodes a container holding gs may be given.
func grantedNodes(inv *gpu.Inventory, gs []ledger.Grant) []gpu.DeviceNode {
	var out []gpu.DeviceNode
	for _, g := range gs {
		if p, ok := inv.ByUUID(g.GPU); ok {
			out = append(out, p.Node())
		}
	}
	if len(out) > 0 {
		out = append(out, inv.Control...)
	}
	return out
}

// Every name the generated CDI spec publishes resolves; MIG names it does
// not publish are refused instead of falling back to the parent GPU.
func TestCDIGPUsFollowTheGeneratedSpec(t *testing.T) {
	inv := migInventory()
	p, _ := fuzzPlugin(t, inv)
	root, err := filepath.Abs("../cdi/testdata/driver-root")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cdi.Generate(inv, cdi.WithDriverRoot(root))
	if err != nil {
		t.Fatal(err)
	}
	names := cdi.DeviceNames(spec)
	if len(names) < len(inv.GPUs)*2+3 {
		t.Fatalf("spec publishes only %v", names)
	}
	for _, name := range names {
		c := &api.Container{Id: "c", CDIDevices: []*api.CDIDevice{{Name: name}}}
		if gpus, err := p.cdiGPUs(inv, c); err != nil || len(gpus) == 0 {
			t.Errorf("%s: %v, %v", name, gpus, err)
		}
	}
	for _, name := range []string{"1:7", "2:0", "0:x"} {
		c := &api.Container{Id: "c", CDIDevices: []*api.CDIDevice{{Name: "nvidia.com/gpu=" + name}}}
		if gpus, err := p.cdiGPUs(inv, c); err == nil {
			t.Errorf("nvidia.com/gpu=%s resolved to %v, want an error", name, gpus)
		}
	}
}
