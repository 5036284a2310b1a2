package plugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// fakeDriver gives the edits of a fake 580 driver root, as hotgpud gives
// the ones it found with the inventory.
type fakeDriver struct{ d *driver.Driver }

func (f fakeDriver) DriverEdits() *driver.Edits {
	if f.d == nil {
		return nil
	}
	e := f.d.Edits()
	return &e
}

const testHook = "/opt/hotgpu/bin/hotgpu-hook"

func withDriver(t *testing.T, f *fixture) *driver.Driver {
	t.Helper()
	root := drivertest.New(t, drivertest.Options{})
	d, err := driver.Discover(root.Dir, root.Version)
	if err != nil {
		t.Fatal(err)
	}
	if err := WithDriver(fakeDriver{d}, testHook)(f.p); err != nil {
		t.Fatal(err)
	}
	return d
}

func mountsOf(adj *api.ContainerAdjustment) map[string]*api.Mount {
	out := map[string]*api.Mount{}
	for _, m := range adj.GetMounts() {
		out[m.Destination] = m
	}
	return out
}

func createHooks(adj *api.ContainerAdjustment) []string {
	var out []string
	for _, h := range adj.GetHooks().GetCreateContainer() {
		out = append(out, h.Path+" "+h.Args[1])
		if h.Timeout.GetValue() != driver.HookTimeout {
			out = append(out, fmt.Sprintf("hook without the %ds bound: %v", driver.HookTimeout, h.Timeout))
		}
	}
	return out
}

// A container given GPUs by annotation gets the driver files the CDI spec
// carries (same host files, same container paths, read-only) and the same
// createContainer hooks; before, it got device nodes only, which CUDA
// cannot use.
func TestAnnotationGetsDriverLibraries(t *testing.T) {
	f := newFixture(t, 2)
	d := withDriver(t, f)
	adj, _, err := f.p.CreateContainer(context.Background(),
		pod("ml", "a", map[string]string{"gpus.hotgpu.dev/container.app": "1"}), ctr("c1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cdi.Generate(f.inv, cdi.WithDriver(d), cdi.WithHookPath(testHook))
	if err != nil {
		t.Fatal(err)
	}
	got := mountsOf(adj)
	if len(got) != len(spec.ContainerEdits.Mounts) {
		t.Errorf("%d mounts, the CDI spec has %d", len(got), len(spec.ContainerEdits.Mounts))
	}
	for _, want := range spec.ContainerEdits.Mounts {
		m := got[want.ContainerPath]
		if m == nil || m.Source != want.HostPath || m.Type != "bind" || !slices.Equal(m.Options, want.Options) {
			t.Errorf("mount %s = %+v, want it as the CDI spec has it: %+v", want.ContainerPath, m, want)
		}
	}
	versioned := drivertest.LibDir + "/libcuda.so." + drivertest.Version
	if m := got[versioned]; m == nil || !slices.Contains(m.Options, "ro") {
		t.Errorf("libcuda is not mounted read-only: %+v", m)
	}
	if want := []string{testHook + " create-symlinks", testHook + " update-ldcache"}; !slices.Equal(createHooks(adj), want) {
		t.Errorf("createContainer hooks = %v, want %v", createHooks(adj), want)
	}
	var specHooks []string
	for _, h := range spec.ContainerEdits.Hooks {
		specHooks = append(specHooks, strings.Join(h.Args, " "))
	}
	for i, h := range adj.GetHooks().GetCreateContainer() {
		if strings.Join(h.Args, " ") != specHooks[i] || !slices.Equal(h.Env, spec.ContainerEdits.Hooks[i].Env) {
			t.Errorf("hook %d = %v %v, the CDI spec runs %v", i, h.Args, h.Env, specHooks[i])
		}
	}
	if len(devicePaths(adj)) == 0 {
		t.Error("the GPU's nodes are missing")
	}
}

// A mount the container already has at a driver file's path is its own
// choice: the plugin does not add a second one there.
func TestDriverMountsKeepTheContainers(t *testing.T) {
	f := newFixture(t, 1)
	withDriver(t, f)
	own := drivertest.LibDir + "/libcuda.so." + drivertest.Version
	c := ctr("c1", "app")
	c.Mounts = []*api.Mount{{Destination: own, Source: "/srv/mine", Type: "bind"}}
	adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "a", map[string]string{"gpus.hotgpu.dev/container.app": "1"}), c)
	if err != nil {
		t.Fatal(err)
	}
	if m := mountsOf(adj)[own]; m != nil {
		t.Errorf("the container's own mount at %s got a second one: %+v", own, m)
	}
	if len(mountsOf(adj)) == 0 {
		t.Error("the other driver files are missing")
	}
}

// A pod with the hotplug annotation gets the driver's files and hooks in
// each container, but no device node, no cgroup rule, no env and no ledger
// entry: a later attach adds the GPU. A bad value or a namespace not
// allowed fails the creation and changes nothing.
func TestHotplugAnnotation(t *testing.T) {
	ann := func(v string) map[string]string { return map[string]string{policy.HotplugAnnotation: v} }
	t.Run("driver files, no GPU", func(t *testing.T) {
		f := newFixture(t, 2)
		withDriver(t, f)
		adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "h", ann("true")), ctr("c1", "app"))
		if err != nil {
			t.Fatal(err)
		}
		if mountsOf(adj)[drivertest.LibDir+"/libcuda.so."+drivertest.Version] == nil || len(createHooks(adj)) != 2 {
			t.Errorf("hotplug container lacks the driver: mounts %v, hooks %v", mountsOf(adj), createHooks(adj))
		}
		if devs := devicePaths(adj); len(devs) != 0 || len(adj.GetLinux().GetResources().GetDevices()) != 0 {
			t.Errorf("hotplug container got devices %v", devs)
		}
		if env := envOf(adj, policy.EnvNVIDIA); env != "" {
			t.Errorf("hotplug container got %s=%s", policy.EnvNVIDIA, env)
		}
		if held := f.l.Grants(); len(held) != 0 {
			t.Errorf("hotplug container recorded in the ledger: %v", held)
		}
	})
	t.Run("false asks nothing", func(t *testing.T) {
		f := newFixture(t, 1)
		withDriver(t, f)
		adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "h", ann("false")), ctr("c1", "app"))
		if err != nil || adj != nil {
			t.Errorf("adjustment %v, err %v; want none", adj, err)
		}
	})
	for name, tc := range map[string]struct{ ns, value, want string }{
		"bad value":         {"ml", "yes", `give "true" or "false"`},
		"namespace refused": {"default", "true", "namespace not allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 1)
			withDriver(t, f)
			adj, _, err := f.p.CreateContainer(context.Background(), pod(tc.ns, "h", ann(tc.value)), ctr("c1", "app"))
			if err == nil || !strings.Contains(err.Error(), policy.HotplugAnnotation) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %s and %q", err, policy.HotplugAnnotation, tc.want)
			}
			if tc.ns == "default" && !errors.Is(err, policy.ErrNamespaceNotAllowed) {
				t.Errorf("err = %v, want ErrNamespaceNotAllowed", err)
			}
			if adj != nil {
				t.Errorf("refused container got %v", adj)
			}
		})
	}
	t.Run("no driver on the node", func(t *testing.T) {
		f := newFixture(t, 1)
		if err := WithDriver(fakeDriver{}, testHook)(f.p); err != nil {
			t.Fatal(err)
		}
		adj, _, err := f.p.CreateContainer(context.Background(), pod("ml", "h", ann("true")), ctr("c1", "app"))
		if err != nil || adj != nil {
			t.Errorf("adjustment %v, err %v; want none", adj, err)
		}
	})
}

// A kubelet allocation claimed by env (runtimes without CDI) gets the
// driver as an annotation does; one given as CDI devices gets it from the
// runtime, through the spec, so the plugin adds nothing.
func TestKubeletPathsGetDriverLibraries(t *testing.T) {
	f := newFixture(t, 4)
	withDriver(t, f)
	const token = "5f0c8a0e1d2b3c4d5e6f708192a3b4c5"
	g1 := f.inv.GPUs[1].UUID
	if err := f.l.Acquire(ledger.Holder{Token: token}, ledger.Kubelet, ledger.Active, g1); err != nil {
		t.Fatal(err)
	}
	c1 := ctr("c1", "app", "HOTGPU_VISIBLE_DEVICES="+g1)
	c1.Annotations = map[string]string{policy.AllocationAnnotation: token}
	adj, _, err := f.p.CreateContainer(context.Background(), pod("default", "p", nil), c1)
	if err != nil {
		t.Fatal(err)
	}
	if mountsOf(adj)[drivertest.LibDir+"/libcuda.so."+drivertest.Version] == nil || len(createHooks(adj)) != 2 {
		t.Errorf("env allocation lacks the driver: mounts %v, hooks %v", mountsOf(adj), createHooks(adj))
	}
	c2 := ctr("c2", "app")
	c2.CDIDevices = []*api.CDIDevice{{Name: "nvidia.com/gpu=2"}}
	if adj, _, err := f.p.CreateContainer(context.Background(), pod("default", "q", nil), c2); err != nil || adj != nil {
		t.Errorf("CDI allocation: adjustment %v, err %v; want none (the spec carries the driver)", adj, err)
	}
}
