package integration

import (
	"context"
	"testing"
	"time"

	devices "github.com/opencontainers/cgroups/devices/config"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/hotplug"
)

// TestSpecRulesFromRealBundles: on cgroup v2, hotgpu rebuilds a container's
// device program from the container's own rules; for a container NRI did
// not report (or before NRI's first Synchronize) it reads them from the OCI
// bundle, found through containerd's shim. This checks that assumption on
// the real runtime: a ctr container's shim works in its bundle, a pod
// container's shim in the pod sandbox's bundle, next to the container's.
func TestSpecRulesFromRealBundles(t *testing.T) {
	c := harness.Shared(t)
	t.Run("ctr container with --device /dev/fuse", func(t *testing.T) {
		_, pid := ctrTask(t, c, "--device", "/dev/fuse")
		rules := specRulesOf(t, pid)
		if !hasRule(rules, devices.Rule{Type: devices.CharDevice, Major: 10, Minor: 229, Allow: true}) {
			t.Errorf("rules of a container run with --device /dev/fuse lack c 10:229: %v", rules)
		}
	})
	t.Run("CRI pod container", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pod := c.MustRunPod(t, "bundle", nil)
		ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
		pid, err := c.CRI().ContainerPID(ctx, ctr)
		if err != nil {
			t.Fatal(err)
		}
		rules := specRulesOf(t, pid)
		if !hasRule(rules, devices.Rule{Type: devices.WildcardDevice, Major: devices.Wildcard, Minor: devices.Wildcard}) {
			t.Errorf("rules of a pod container lack containerd's deny-all: %v", rules)
		}
	})
}

func specRulesOf(t *testing.T, pid int) []*devices.Rule {
	t.Helper()
	tgt, err := hotplug.TargetFromPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := hotplug.SpecRules(tgt)
	if err != nil {
		t.Fatalf("rules of pid %d (cgroup %s): %v", pid, tgt.Cgroup, err)
	}
	return rules
}

// hasRule reports whether rules hold want, comparing type, numbers and
// allow only.
func hasRule(rules []*devices.Rule, want devices.Rule) bool {
	for _, r := range rules {
		if r.Type == want.Type && r.Major == want.Major && r.Minor == want.Minor && r.Allow == want.Allow {
			return true
		}
	}
	return false
}
