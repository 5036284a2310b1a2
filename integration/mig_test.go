package integration

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// simulatedMIG is GPU 0 of the simulated dgxa100 in MIG mode in mixed
// profiles: 0:0 3g.20gb, 0:1 2g.10gb, 0:2 and 0:3 1g.5gb.
const simulatedMIG = "0=3g.20gb,2g.10gb,1g.5gb,1g.5gb"

// migDevices reads GPU 0's MIG devices from hotgpud.
func migDevices(t *testing.T, d *hotgpud) []gpu.MIGDevice {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) == 0 || len(gpus[0].MIG) != 4 {
		t.Fatalf("GPU 0 is not in MIG mode with 4 devices: %+v", gpus)
	}
	return gpus[0].MIG
}

// migHolder is the container id holding a MIG device ("" when free).
func migHolder(t *testing.T, d *hotgpud, uuid string) string {
	t.Helper()
	gpus, err := d.api.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gpus {
		if g.UUID == uuid && g.Grant != nil {
			return g.Grant.Holder.ContainerID
		}
	}
	return ""
}

// capsIn lists /dev/nvidia-caps/* inside the container.
func capsIn(t *testing.T, c *harness.Containerd, ctr string) []string {
	t.Helper()
	out, _, _ := c.MustExec(t, ctr, "sh", "-c", "ls /dev/nvidia-caps 2>/dev/null; true")
	return strings.Fields(out)
}

func capNames(m gpu.MIGDevice) []string {
	var out []string
	for _, n := range m.Caps {
		out = append(out, strings.TrimPrefix(n.Path, "/dev/nvidia-caps/"))
	}
	return out
}

// checkOnlyMIG checks that the container has GPU 0's node and exactly the
// caps nodes of m, usable (ENXIO: allowed, no driver), one cgroup rule each.
func checkOnlyMIG(t *testing.T, c *harness.Containerd, ctr string, m gpu.MIGDevice) {
	t.Helper()
	if got := strings.Join(capsIn(t, c, ctr), " "); got != strings.Join(capNames(m), " ") {
		t.Errorf("caps nodes in the container = %q, want exactly %s's %q", got, m.Name(), capNames(m))
	}
	list := devicesList(t, c, ctr)
	for _, n := range append([]gpu.DeviceNode{{Path: "/dev/nvidia0", Major: 195, Minor: 0}}, m.Caps...) {
		if got := openIn(t, c, ctr, n.Path); got != "ENXIO" {
			t.Errorf("open %s = %s, want ENXIO (allowed, no driver)", n.Path, got)
		}
		if !strings.Contains(list, fmt.Sprintf("c %d:%d rw", n.Major, n.Minor)) {
			t.Errorf("devices.list lacks %s:\n%s", n.Path, list)
		}
	}
	if strings.Contains(list, "195:*") || strings.Contains(list, fmt.Sprintf("%d:*", m.Caps[0].Major)) || strings.Contains(list, "a *:*") {
		t.Errorf("devices.list has a wildcard:\n%s", list)
	}
}

// mknodEPERM makes n inside the container and checks that opening it is
// refused: the device cgroup does not allow it.
func mknodEPERM(t *testing.T, c *harness.Containerd, ctr string, n gpu.DeviceNode) {
	t.Helper()
	if _, stderr, code := c.MustExec(t, ctr, "sh", "-c", fmt.Sprintf("mkdir -p /dev/nvidia-caps && mknod %s c %d %d", n.Path, n.Major, n.Minor)); code != 0 {
		t.Fatalf("mknod %s: %s", n.Path, stderr)
	}
	if got := openIn(t, c, ctr, n.Path); got != "EPERM" {
		t.Errorf("%s made inside: open = %s, want EPERM", n.Path, got)
	}
	c.MustExec(t, ctr, "rm", "-f", n.Path)
}

// TestMIGAttach: MIG devices attached and detached live on the real
// runtime, named "0:2", by MIG UUID, by --count --mig-profile, and by pod
// annotation: a container sees exactly its instance's caps nodes, another
// instance's caps node made inside gives EPERM, and the parent GPU is busy
// while an instance is held.
func TestMIGAttach(t *testing.T) {
	env := startEnv(t, "--simulate-mig", simulatedMIG)
	c, d := env.c, env.d
	mig := migDevices(t, d)
	ns := harness.PodNamespace

	pod := c.MustRunPod(t, "mig", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	out := mustCLI(t, d, "attach", "--pod", ns+"/mig", "--gpu", "0:2")
	if !strings.Contains(out, "attached MIG device 0:2 (1g.5gb") || migHolder(t, d, mig[2].UUID) != ctr {
		t.Fatalf("attach --gpu 0:2: ledger holder %q; CLI said:\n%s", migHolder(t, d, mig[2].UUID), out)
	}
	checkOnlyMIG(t, c, ctr, mig[2])
	if table := mustCLI(t, d, "ls"); !regexp.MustCompile(`(?m)^0:2\s+` + mig[2].UUID + `\s+MIG 1g\.5gb\s+healthy\s+.*attach`).MatchString(table) {
		t.Errorf("hotgpu ls has no attach row for MIG device 0:2:\n%s", table)
	}
	mknodEPERM(t, c, ctr, mig[3].Caps[0]) // the sibling 1g.5gb's
	mknodEPERM(t, c, ctr, mig[0].Caps[1]) // the 3g.20gb's

	other := c.MustRunPod(t, "mig-other", nil)
	octr := c.MustRunContainer(t, other, "app", harness.ContainerOptions{})
	if _, stderr, code := cli(t, d, "attach", "--pod", ns+"/mig-other", "--gpu", "0"); code == 0 || !strings.Contains(stderr, mig[2].UUID) {
		t.Fatalf("GPU 0 whole while its 0:2 is held: exit %d, %s; want a refusal naming %s", code, stderr, mig[2].UUID)
	}
	out = mustCLI(t, d, "attach", "--pod", ns+"/mig-other", "--count", "1", "--mig-profile", "1g.5gb")
	if migHolder(t, d, mig[3].UUID) != octr {
		t.Fatalf("attach --count 1 --mig-profile 1g.5gb did not give the free 1g.5gb 0:3:\n%s", out)
	}
	checkOnlyMIG(t, c, octr, mig[3])
	if _, _, code := cli(t, d, "attach", "--pod", ns+"/mig-other", "--count", "1", "--mig-profile", "1g.5gb"); code == 0 {
		t.Fatal("a third 1g.5gb attached; there are two")
	}

	mustCLI(t, d, "detach", "--pod", ns+"/mig", "--gpu", mig[2].UUID)
	if got := capsIn(t, c, ctr); len(got) != 0 {
		t.Errorf("caps nodes left after detach: %v", got)
	}
	if got := gpuNodes(t, c, ctr); len(got) != 0 {
		t.Errorf("GPU nodes left after its only MIG device's detach: %v", got)
	}
	mknodEPERM(t, c, ctr, mig[2].Caps[0])
	checkOnlyMIG(t, c, octr, mig[3]) // the other container keeps its own
	mustCLI(t, d, "detach", "--pod", ns+"/mig-other", "--all")

	t.Run("annotation", func(t *testing.T) {
		pod := c.MustRunPod(t, "mig-ann", map[string]string{"gpus.hotgpu.dev/container.app": "0:1"})
		ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
		checkOnlyMIG(t, c, ctr, mig[1])
		mknodEPERM(t, c, ctr, mig[2].Caps[0])
		if migHolder(t, d, mig[1].UUID) != ctr {
			t.Fatalf("0:1 is not held by the annotated container")
		}
	})
}
