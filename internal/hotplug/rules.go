package hotplug

import (
	"fmt"

	devices "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// DefaultRules returns the device rules runc (1.5) adds to every container
// after the rules of its OCI spec. Use RulesFromSpec(spec rules) followed by
// DefaultRules() as the base of a cgroup v2 program when the container's own
// rules are known, and DefaultRules() alone when they are not.
func DefaultRules() []*devices.Rule {
	c := func(major, minor int64, perms devices.Permissions) *devices.Rule {
		return &devices.Rule{Type: devices.CharDevice, Major: major, Minor: minor, Permissions: perms, Allow: true}
	}
	return []*devices.Rule{
		c(devices.Wildcard, devices.Wildcard, "m"),
		{Type: devices.BlockDevice, Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: "m", Allow: true},
		c(1, 3, "rwm"),                  // /dev/null
		c(1, 8, "rwm"),                  // /dev/random
		c(1, 7, "rwm"),                  // /dev/full
		c(5, 0, "rwm"),                  // /dev/tty
		c(1, 5, "rwm"),                  // /dev/zero
		c(1, 9, "rwm"),                  // /dev/urandom
		c(136, devices.Wildcard, "rwm"), // /dev/pts/*
		c(5, 2, "rwm"),                  // /dev/ptmx
		c(10, 200, "rwm"),               // /dev/net/tun
	}
}

// RulesFromSpec converts the device cgroup rules of an OCI spec
// (linux.resources.devices) the way runc does: a missing type is "a", a
// missing major or minor is a wildcard.
func RulesFromSpec(in []specs.LinuxDeviceCgroup) ([]*devices.Rule, error) {
	out := make([]*devices.Rule, 0, len(in))
	for i, d := range in {
		r := &devices.Rule{Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: devices.Permissions(d.Access), Allow: d.Allow}
		switch d.Type {
		case "", "a":
			r.Type = devices.WildcardDevice
		case "b":
			r.Type = devices.BlockDevice
		case "c":
			r.Type = devices.CharDevice
		default:
			return nil, fmt.Errorf("failed to convert device rule %d: invalid type %q (want a, b or c)", i, d.Type)
		}
		if d.Major != nil {
			r.Major = *d.Major
		}
		if d.Minor != nil {
			r.Minor = *d.Minor
		}
		if !r.Permissions.IsValid() || r.Permissions.IsEmpty() {
			return nil, fmt.Errorf("failed to convert device rule %d: invalid access %q (want letters of rwm)", i, d.Access)
		}
		out = append(out, r)
	}
	return out, nil
}

// nodeRule is the allow rule for exactly one character device. It refuses
// negative numbers because -1 is a wildcard to the cgroup code.
func nodeRule(n gpu.DeviceNode) (*devices.Rule, error) {
	if err := checkNode(n); err != nil {
		return nil, err
	}
	return &devices.Rule{Type: devices.CharDevice, Major: n.Major, Minor: n.Minor, Permissions: "rwm", Allow: true}, nil
}

func checkNode(n gpu.DeviceNode) error {
	if n.Major < 0 || n.Minor < 0 || n.Major > 0xfff || n.Minor > 0xfffff {
		return fmt.Errorf("invalid device number %d:%d for %q: hotgpu grants single devices only", n.Major, n.Minor, n.Path)
	}
	return nil
}
