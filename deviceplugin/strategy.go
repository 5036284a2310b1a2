package deviceplugin

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// MIG strategies, as NVIDIA's device plugin names them (migStrategy), so
// that manifests carry over.
const (
	// StrategyNone advertises whole GPUs only; a GPU in MIG mode is not
	// advertised (a CUDA program cannot use it whole).
	StrategyNone = "none"
	// StrategySingle advertises, under the one resource, whole GPUs when
	// no GPU is in MIG mode, or the MIG devices when every GPU is in MIG
	// mode with every device of one profile; any other layout advertises
	// nothing (NVIDIA's plugin refuses it too).
	StrategySingle = "single"
	// StrategyMixed advertises whole GPUs under the one resource and the
	// MIG devices of each profile under a resource of their own
	// (nvidia.com/mig-1g.5gb), each resource its own registered plugin.
	StrategyMixed = "mixed"
)

// Strategies are the MIG strategies hotgpud accepts.
var Strategies = []string{StrategyNone, StrategySingle, StrategyMixed}

// Selector picks, from an inventory, the devices one plugin advertises.
type Selector func(*gpu.Inventory) []*gpu.GPU

// Resource is one extended resource and the devices it advertises.
type Resource struct {
	Name    string
	Devices Selector
}

// WholeGPUs are the GPUs not in MIG mode.
func WholeGPUs(inv *gpu.Inventory) []*gpu.GPU {
	var out []*gpu.GPU
	for i := range inv.GPUs {
		if !inv.GPUs[i].MIGEnabled {
			out = append(out, &inv.GPUs[i])
		}
	}
	return out
}

// MIGDevices are the MIG devices of one profile.
func MIGDevices(profile string) Selector {
	return func(inv *gpu.Inventory) []*gpu.GPU { return inv.Instances(profile) }
}

// SingleDevices is what StrategySingle advertises (see there).
func SingleDevices(inv *gpu.Inventory) []*gpu.GPU {
	if SingleProblem(inv) != "" {
		return nil
	}
	if whole := WholeGPUs(inv); len(whole) > 0 {
		return whole
	}
	return inv.Instances("")
}

// SingleProblem says why StrategySingle advertises nothing on inv ("" when
// it advertises its devices).
func SingleProblem(inv *gpu.Inventory) string {
	var mig, whole int
	profiles := map[string]bool{}
	for _, g := range inv.GPUs {
		if !g.MIGEnabled {
			whole++
			continue
		}
		mig++
		for _, m := range g.MIG {
			profiles[m.Profile] = true
		}
	}
	switch {
	case mig > 0 && whole > 0:
		return fmt.Sprintf("migStrategy single needs every GPU in MIG mode or none: %d are, %d are not; use mixed", mig, whole)
	case len(profiles) > 1:
		return fmt.Sprintf("migStrategy single needs every MIG device in one profile, the node has %s; use mixed", strings.Join(sortedKeys(profiles), ", "))
	}
	return ""
}

// DefaultMIGPrefix is what MIG resources are named by under mixed, as
// NVIDIA's device plugin names them.
const DefaultMIGPrefix = "nvidia.com/mig-"

// MIGResourceName is the resource of a MIG profile under mixed: prefix
// ("nvidia.com/mig-") and the profile, with the characters a resource name
// cannot carry ("+", ",") made dots: nvidia.com/mig-1g.5gb.
func MIGResourceName(prefix, profile string) string {
	return prefix + strings.NewReplacer("+", ".", ",", ".").Replace(profile)
}

// Resources lists the resources a strategy serves on inv: wholeResource
// first, then, under mixed, one per MIG profile the node has now (named by
// migPrefix, see MIGResourceName), so the list follows MIG layout changes.
func Resources(strategy, wholeResource, migPrefix string, inv *gpu.Inventory) ([]Resource, error) {
	switch strategy {
	case StrategyNone, "":
		return []Resource{{Name: wholeResource, Devices: WholeGPUs}}, nil
	case StrategySingle:
		return []Resource{{Name: wholeResource, Devices: SingleDevices}}, nil
	case StrategyMixed:
		out := []Resource{{Name: wholeResource, Devices: WholeGPUs}}
		profiles := map[string]bool{}
		for _, g := range inv.GPUs {
			for _, m := range g.MIG {
				profiles[m.Profile] = true
			}
		}
		for _, p := range sortedKeys(profiles) {
			out = append(out, Resource{Name: MIGResourceName(migPrefix, p), Devices: MIGDevices(p)})
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown MIG strategy %q: use one of %s", strategy, strings.Join(Strategies, ", "))
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
