package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

const migResource = "nvidia.com/mig-1g.5gb"

var migPod = `apiVersion: v1
kind: Pod
metadata:
  name: mig1
  namespace: default
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: ` + harness.BusyboxImage + `
    imagePullPolicy: Never
    command: ["sleep", "86400"]
    resources:
      limits:
        ` + migResource + `: 1
`

// TestRealKubeletMIG: under the mixed strategy a real kubelet v1.34 sees
// each MIG profile of the simulated node as a resource of its own
// (nvidia.com/mig-1g.5gb, ...), allocates one MIG device to a static pod,
// and the container sees exactly that instance: its parent's node and its
// own caps nodes; another instance's caps node made inside gives EPERM.
func TestRealKubeletMIG(t *testing.T) {
	bins := harness.Deps(t)
	if testing.Short() {
		t.Skip("-short: the kubelet test builds kubelet once (~5 min) and runs ~1 min")
	}
	c := harness.StartContainerd(t, harness.Options{Bins: bins})
	cfg := filepath.Join(t.TempDir(), "hotgpud.yaml")
	conf := "version: v1\nsimulate: dgxa100\nsimulateMIG: [\"" + simulatedMIG + "\"]\n" +
		"devicePlugin:\n  resourceName: " + gpuResource + "\n  migStrategy: mixed\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startHotgpud(t, c, "--config", cfg, "--kubelet-dir", kubeletPluginDir)
	k := startKubelet(t, c)
	pr := k.podResources(t)
	mig := migDevices(t, d)
	ones := []string{mig[2].UUID, mig[3].UUID}
	eventually(t, time.Minute, "kubelet to see the two 1g.5gb MIG devices", func() (bool, string) {
		ids, err := allocatable(pr, migResource)
		if err != nil {
			return false, err.Error()
		}
		return sameSet(ids, ones), fmt.Sprint(ids)
	})
	for res, want := range map[string][]string{
		"nvidia.com/mig-2g.10gb": {mig[1].UUID}, "nvidia.com/mig-3g.20gb": {mig[0].UUID},
		gpuResource: nil, // GPU 0 is in MIG mode: only GPUs 1-7 whole
	} {
		ids, err := allocatable(pr, res)
		if err != nil {
			t.Fatal(err)
		}
		if want != nil && !sameSet(ids, want) || want == nil && (len(ids) != 7 || slices.Contains(ids, d.uuid(t, 0))) {
			t.Errorf("kubelet's allocatable %s = %v, want %v (or GPUs 1-7)", res, ids, want)
		}
	}

	k.runStaticPod("mig1", migPod)
	ctr := waitContainer(t, c, "mig1", "main")
	got, err := podDevices(pr, "mig1-hotgpu-node", migResource)
	if err != nil || len(got["main"]) != 1 || !slices.Contains(ones, got["main"][0]) {
		t.Fatalf("PodResources for the pod = %v, %v; want one 1g.5gb MIG device", got, err)
	}
	uuid := got["main"][0]
	i := slices.Index(ones, uuid)
	mine, other := mig[2+i], mig[3-i]
	if h := migHolder(t, d, uuid); h != ctr {
		t.Fatalf("ledger gives %s to %q, not to the pod's container %s", mine.Name(), h, ctr)
	}
	checkOnlyMIG(t, c, ctr, mine)
	if got := gpuNodes(t, c, ctr); !slices.Equal(got, []string{"nvidia0"}) {
		t.Errorf("GPU nodes in the container = %v, want only the parent's nvidia0", got)
	}
	mknodEPERM(t, c, ctr, other.Caps[0])
	if env, _, _ := c.MustExec(t, ctr, "sh", "-c", "echo $HOTGPU_VISIBLE_DEVICES"); strings.TrimSpace(env) != uuid {
		t.Errorf("HOTGPU_VISIBLE_DEVICES = %q, want %s", env, uuid)
	}
}
