package doctor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

// writeSpec writes the spec of inv as hotgpud does and returns its path.
func writeSpec(t *testing.T, inv *gpu.Inventory, opts ...cdi.Option) string {
	t.Helper()
	spec, err := cdi.Generate(inv, opts...)
	must(t, err)
	path, err := cdi.Write(spec, t.TempDir(), cdi.SpecFile(cdi.FormatYAML))
	must(t, err)
	return path
}

func TestCDIChecksWrittenSpec(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			inv := simulated(t, preset, nil)
			path := writeSpec(t, inv)
			cs := cdiChecks(path, inv, "/", nil)
			expect(t, find(t, cs, StepCDI, "spec"), OK, path, "valid CDI")
			expect(t, find(t, cs, StepCDI, "devices"), OK, "names every GPU")
			expect(t, find(t, cs, StepCDI, "driver files"), Skip, "simulated")
		})
	}
}

func TestCDIChecksInvalidYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hotgpu.yaml")
	must(t, os.WriteFile(path, []byte("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [\n"), 0o644))
	cs := cdiChecks(path, simulated(t, "dgxa100", nil), "/", nil)
	expect(t, find(t, cs, StepCDI, "spec"), Fail, "is invalid", "hotgpu cdi generate --output "+path)
}

func TestCDIChecksInvalidSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hotgpu.yaml")
	must(t, os.WriteFile(path, []byte("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"bad name!\"\n  containerEdits: {}\n"), 0o644))
	cs := cdiChecks(path, simulated(t, "pcie8", nil), "/", nil)
	expect(t, find(t, cs, StepCDI, "spec"), Fail, "is invalid")
}

func TestCDIChecksSpecMissingAGPU(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			inv := simulated(t, preset, nil)
			old := *inv
			old.GPUs = inv.GPUs[:len(inv.GPUs)-1] // written before the last GPU was there
			path := writeSpec(t, &old)
			cs := cdiChecks(path, inv, "/", nil)
			last := inv.GPUs[len(inv.GPUs)-1]
			expect(t, find(t, cs, StepCDI, "devices"), Fail, "nvidia.com/gpu="+last.UUID, "stale", "hotgpu cdi generate")
		})
	}
}

func TestCDIChecksSpecNamesAGoneGPU(t *testing.T) {
	inv := simulated(t, "dgxa100", nil)
	path := writeSpec(t, inv)
	now := *inv
	now.GPUs = inv.GPUs[1:]
	cs := cdiChecks(path, &now, "/", nil)
	expect(t, find(t, cs, StepCDI, "devices"), Warn, inv.GPUs[0].UUID, "does not see")
}

func TestCDIChecksConflictingSpec(t *testing.T) {
	inv := simulated(t, "dgxa100", nil)
	path := writeSpec(t, inv)
	data, err := os.ReadFile(path)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(filepath.Dir(path), "nvidia.yaml"), data, 0o644)) // another tool's spec
	cs := cdiChecks(path, inv, "/", nil)
	expect(t, find(t, cs, StepCDI, "devices"), OK)
	var conflicts int
	for _, c := range cs {
		if c.Name == "spec directory" {
			expect(t, c, Fail, "conflict", "keep one spec per device name")
			conflicts++
		}
	}
	if conflicts == 0 {
		t.Errorf("two specs defining the same devices not reported:\n%s", dump(cs))
	}
}

func TestCDIChecksNoSpecWritten(t *testing.T) {
	for _, preset := range presets {
		t.Run(preset, func(t *testing.T) {
			inv := simulated(t, preset, nil)
			path := filepath.Join(t.TempDir(), "hotgpu.yaml")
			cs := cdiChecks(path, inv, "/", nil)
			expect(t, find(t, cs, StepCDI, "spec"), Warn, "no CDI spec at "+path)
			expect(t, find(t, cs, StepCDI, "generated spec"), OK, "valid CDI")
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("doctor wrote %s: %v", path, err)
			}
		})
	}
}

func TestCDIChecksDriverFiles(t *testing.T) {
	inv := simulated(t, "dgxa100", nil)
	root := drivertest.New(t, drivertest.Options{Version: inv.DriverVersion})
	hook := filepath.Join(t.TempDir(), "hotgpu-hook")
	must(t, os.WriteFile(hook, nil, 0o755))
	opts := []cdi.Option{cdi.WithDriverRoot(root.Dir), cdi.WithHookPath(hook)}
	path := writeSpec(t, inv, opts...)

	cs := cdiChecks(path, inv, root.Dir, opts)
	expect(t, find(t, cs, StepCDI, "driver files"), OK, "exist under "+root.Dir, inv.DriverVersion)

	lib := filepath.Join(root.Dir, drivertest.LibDir, "libnvidia-ml.so."+inv.DriverVersion)
	must(t, os.Remove(lib))
	must(t, os.Remove(hook))
	cs = cdiChecks(path, inv, root.Dir, opts)
	var missing bool
	for _, c := range cs {
		if c.Name == "driver files" && c.Status == Fail && c.Detail == "mounts "+lib+", which is missing: containers given a GPU fail to start" {
			missing = true
		}
	}
	if !missing {
		t.Errorf("a mounted library that is gone is not a failure:\n%s", dump(cs))
	}
	expect(t, find(t, cs, StepCDI, "hooks"), Fail, hook, "missing")
}

func TestCDIChecksNoDriverFiles(t *testing.T) {
	inv := simulated(t, "pcie8", nil)
	path := writeSpec(t, inv)
	real := *inv
	real.Simulated = "" // a real node whose spec mounts nothing
	cs := cdiChecks(path, &real, "/", nil)
	expect(t, find(t, cs, StepCDI, "driver files"), Fail, "no driver files", "--driver-root")
}
