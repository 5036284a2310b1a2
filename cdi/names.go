package cdi

import (
	"tags.cncf.io/container-device-interface/pkg/parser"
	specs "tags.cncf.io/container-device-interface/specs-go"
)

// DeviceNames returns the fully qualified names of the spec's devices
// ("nvidia.com/gpu=0"), as users pass them to --device.
func DeviceNames(spec *specs.Spec) []string {
	vendor, class := parser.ParseQualifier(spec.Kind)
	names := make([]string, 0, len(spec.Devices))
	for _, d := range spec.Devices {
		names = append(names, parser.QualifiedName(vendor, class, d.Name))
	}
	return names
}
