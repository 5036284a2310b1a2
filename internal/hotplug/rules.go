package hotplug

import (
	"fmt"
	"strings"

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

// defaultPaths names the nodes of runc's default rules that have one.
var defaultPaths = map[[2]int64]string{
	{1, 3}: "/dev/null", {1, 8}: "/dev/random", {1, 7}: "/dev/full", {5, 0}: "/dev/tty",
	{1, 5}: "/dev/zero", {1, 9}: "/dev/urandom", {5, 2}: "/dev/ptmx", {10, 200}: "/dev/net/tun",
}

// defaultRulesFor is DefaultRules as runc applies them to a spec: a default
// whose node the spec lists in linux.devices is dropped (the spec's own
// rules decide about that node).
func defaultRulesFor(specDevices []specs.LinuxDevice) []*devices.Rule {
	listed := map[string]bool{}
	for _, d := range specDevices {
		listed[d.Path] = true
	}
	var out []*devices.Rule
	for _, r := range DefaultRules() {
		if p, ok := defaultPaths[[2]int64{r.Major, r.Minor}]; ok && r.Type == devices.CharDevice && listed[p] {
			continue
		}
		out = append(out, r)
	}
	return out
}

// AllowingRule returns the rule that lets rules allow reading or writing n,
// or nil when they do not.
func AllowingRule(rules []*devices.Rule, n gpu.DeviceNode) *devices.Rule {
	return allowingRule(rules, n, false)
}

// widerRule is AllowingRule ignoring the rules for exactly n.
func widerRule(rules []*devices.Rule, n gpu.DeviceNode) *devices.Rule {
	return allowingRule(rules, n, true)
}

// allowingRule applies rules in order as runc's device emulator does (an
// "a" rule resets to allow-all or deny-all, the others add or remove
// exceptions) and returns the last rule that allows n, or nil when the
// outcome does not let n be read or written.
func allowingRule(rules []*devices.Rule, n gpu.DeviceNode, skipExact bool) *devices.Rule {
	type key struct {
		typ          devices.Type
		major, minor int64
	}
	defaultAllow := false
	except := map[key]devices.Permissions{}
	var last *devices.Rule // the last rule that made the node allowed
	for _, r := range rules {
		if skipExact && r.Type == devices.CharDevice && r.Major == n.Major && r.Minor == n.Minor {
			continue
		}
		if r.Type == devices.WildcardDevice {
			defaultAllow, except = r.Allow, map[key]devices.Permissions{}
		} else if k := (key{r.Type, r.Major, r.Minor}); r.Allow != defaultAllow {
			except[k] = except[k].Union(r.Permissions)
		} else if p := except[k].Difference(r.Permissions); p.IsEmpty() {
			delete(except, k)
		} else {
			except[k] = p
		}
		if r.Allow && matches(r, n) && strings.ContainsAny(string(r.Permissions), "rw") {
			last = r
		}
	}
	var hit devices.Permissions
	for k, p := range except {
		if k.typ == devices.CharDevice && (k.major == devices.Wildcard || k.major == n.Major) &&
			(k.minor == devices.Wildcard || k.minor == n.Minor) {
			hit = hit.Union(p)
		}
	}
	if defaultAllow {
		hit = devices.Permissions("rwm").Difference(hit)
	}
	if !strings.ContainsAny(string(hit), "rw") {
		return nil
	}
	return last
}

func matches(r *devices.Rule, n gpu.DeviceNode) bool {
	if r.Type == devices.WildcardDevice {
		return true
	}
	return r.Type == devices.CharDevice &&
		(r.Major == devices.Wildcard || r.Major == n.Major) && (r.Minor == devices.Wildcard || r.Minor == n.Minor)
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
