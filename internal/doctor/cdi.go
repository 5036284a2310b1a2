package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/cdi"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

const cdiStep step = StepCDI

// cdiChecks validates the spec at path (what hotgpud wrote) with the CDI
// library, or, when there is none, the spec cdi.Generate would write; then
// checks that it names every GPU and that its driver files and hooks exist.
func cdiChecks(path string, inv *gpu.Inventory, driverRoot string, opts []cdi.Option) []Check {
	var out []Check
	var want *specs.Spec
	if inv != nil {
		var err error
		if want, err = cdi.Generate(inv, opts...); err != nil {
			out = append(out, cdiStep.fail("generate", err.Error(), "fix the driver step first; the spec needs the GPUs and the driver's libraries"))
		}
	}
	spec, written, check := readWritten(path)
	out = append(out, check)
	if check.Status == Fail {
		return out
	}
	if !written {
		if want == nil {
			out[len(out)-1].Detail = "no CDI spec at " + path + ", and none to compare it with: NVML was not read (see the driver step)"
			return out
		}
		if spec, check = validate(want); check.Status == Fail {
			return append(out, check)
		}
		out = append(out, check)
	} else if want != nil {
		out = append(out, namesCheck(path, spec, want))
	}
	out = append(out, conflictChecks(path)...)
	out = append(out, filesChecks(spec, inv, driverRoot)...)
	return out
}

// readWritten reads and validates the spec at path; written is false when
// there is none.
func readWritten(path string) (spec *specs.Spec, written bool, c Check) {
	regen := fmt.Sprintf("hotgpud rewrites it when it starts ('systemctl restart hotgpud'), or run 'hotgpu cdi generate --output %s'; never edit it by hand", path)
	loaded, err := cdiapi.ReadSpec(path, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, cdiStep.warn("spec", "no CDI spec at "+path+"; checking the one hotgpud would write",
			"start hotgpud, which writes it, or run 'hotgpu cdi generate --output "+path+"'")
	case err != nil:
		return nil, true, cdiStep.fail("spec", "the CDI spec at "+path+" is invalid: "+err.Error(), regen)
	}
	return loaded.Spec, true, cdiStep.ok("spec", fmt.Sprintf("%s: valid CDI %s spec of %s, %d devices", path, loaded.Version, loaded.Kind, len(loaded.Devices)))
}

// validate runs the CDI library's validation on a spec not yet written.
func validate(spec *specs.Spec) (*specs.Spec, Check) {
	dir, err := os.MkdirTemp("", "hotgpu-doctor-cdi-")
	if err != nil {
		return nil, cdiStep.fail("spec", "failed to make a temporary directory: "+err.Error(), "check $TMPDIR")
	}
	defer os.RemoveAll(dir)
	data, err := cdi.Encode(spec, cdi.FormatYAML)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, cdi.SpecFile(cdi.FormatYAML)), data, 0o600)
	}
	if err == nil {
		_, err = cdiapi.ReadSpec(filepath.Join(dir, cdi.SpecFile(cdi.FormatYAML)), 0)
	}
	if err != nil {
		return nil, cdiStep.fail("spec", "the spec hotgpud would write is invalid: "+err.Error(), "report it: hotgpu should never make an invalid spec")
	}
	return spec, cdiStep.ok("generated spec", fmt.Sprintf("valid CDI %s spec of %s, %d devices", spec.Version, spec.Kind, len(spec.Devices)))
}

// namesCheck compares the written spec's device names with those of the
// spec the inventory makes now.
func namesCheck(path string, got, want *specs.Spec) Check {
	have := cdi.DeviceNames(got)
	var missing, extra []string
	for _, n := range cdi.DeviceNames(want) {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	for _, n := range have {
		if !slices.Contains(cdi.DeviceNames(want), n) {
			extra = append(extra, n)
		}
	}
	fix := "the spec is stale: hotgpud rewrites it when the GPUs change; restart hotgpud, or run 'hotgpu cdi generate --output " + path + "'"
	switch {
	case len(missing) > 0:
		return cdiStep.fail("devices", fmt.Sprintf("names no device for %s", strings.Join(missing, ", ")), fix)
	case len(extra) > 0:
		return cdiStep.warn("devices", fmt.Sprintf("names devices NVML does not see: %s", strings.Join(extra, ", ")), fix)
	}
	return cdiStep.ok("devices", fmt.Sprintf("names every GPU (%d names)", len(have)))
}

// conflictChecks loads the spec's whole directory as a runtime does: two
// specs that define one device name make the CDI library refuse both.
func conflictChecks(path string) []Check {
	dir := filepath.Dir(path)
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(dir), cdiapi.WithAutoRefresh(false))
	if err != nil && cache == nil {
		return []Check{cdiStep.warn("spec directory", "failed to load "+dir+": "+err.Error(), "check the directory's permissions")}
	}
	var out []Check
	for file, errs := range cache.GetErrors() {
		for _, e := range errs {
			if filepath.Clean(file) == filepath.Clean(path) || strings.Contains(e.Error(), "conflict") {
				out = append(out, cdiStep.fail("spec directory", file+": "+e.Error(),
					"keep one spec per device name in "+dir+": remove another tool's spec for the same GPUs (e.g. nvidia-ctk's nvidia.yaml)"))
			} else {
				out = append(out, cdiStep.warn("spec directory", file+": "+e.Error(), "the runtime ignores this file: fix or remove it"))
			}
		}
	}
	return out
}

// filesChecks: every host file the spec mounts and every hook it runs must
// exist, and the driver's files of NVML's version must all be mounted.
func filesChecks(spec *specs.Spec, inv *gpu.Inventory, driverRoot string) []Check {
	edits := spec.ContainerEdits
	if len(edits.Mounts) == 0 {
		switch {
		case inv == nil:
			return []Check{cdiStep.skip("driver files", "the spec mounts no driver files, and NVML was not read to say whether it should")}
		case inv.Simulated != "":
			return []Check{cdiStep.skip("driver files", "a simulated node without --driver-root mounts no driver files")}
		}
		return []Check{cdiStep.fail("driver files", "the spec mounts no driver files: containers get nodes but no libcuda",
			"install the driver's user-space, or give --driver-root (/run/nvidia/driver with a driver container), then regenerate the spec")}
	}
	var out []Check
	mounted := map[string]bool{}
	for _, m := range edits.Mounts {
		mounted[m.HostPath] = true
		if _, err := os.Lstat(m.HostPath); err != nil {
			out = append(out, cdiStep.fail("driver files", fmt.Sprintf("mounts %s, which is missing: containers given a GPU fail to start", m.HostPath),
				"the driver was upgraded or removed: restart hotgpud (or 'hotgpu cdi generate') to write the spec again"))
		}
	}
	for _, h := range edits.Hooks {
		if _, err := os.Stat(h.Path); err != nil {
			out = append(out, cdiStep.fail("hooks", fmt.Sprintf("runs %s, which is missing: containers given a GPU fail to start", h.Path),
				"install hotgpu-hook there ('make install'), or set the hook path hotgpud writes into the spec"))
			break
		}
	}
	out = append(out, discoveredCheck(mounted, inv, driverRoot, len(edits.Mounts)))
	return out
}

// discoveredCheck compares the mounts with what package driver finds under
// the root for NVML's driver version now.
func discoveredCheck(mounted map[string]bool, inv *gpu.Inventory, root string, n int) Check {
	if inv == nil {
		return cdiStep.skip("driver files", "NVML did not say the driver version")
	}
	d, err := driver.Discover(root, inv.DriverVersion)
	if err != nil {
		return cdiStep.fail("driver files", err.Error(), "install the driver's user-space of version "+inv.DriverVersion+" under "+root)
	}
	var missing []string
	for _, m := range d.Edits().Mounts {
		if !mounted[m.HostPath] {
			missing = append(missing, m.HostPath)
		}
	}
	if len(missing) > 0 {
		return cdiStep.warn("driver files", fmt.Sprintf("the spec does not mount %d file(s) driver %s has under %s: %s", len(missing), d.Version, root, strings.Join(missing, ", ")),
			"the spec is stale: restart hotgpud (or 'hotgpu cdi generate') to write it again")
	}
	return cdiStep.ok("driver files", fmt.Sprintf("%d mounts of driver %s exist under %s", n, d.Version, root))
}
