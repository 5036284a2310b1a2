// Package policy parses and checks the GPU requests that reach hotgpud from
// outside: pod annotations, visible-devices environment variables and API
// requests. Everything here is user input; this package turns it into a small
// validated Request or an error that names the input and the reason. It does
// not know who holds which GPU (that is the ledger's job) and never produces
// device paths.
package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// AnnotationPrefix is followed by the container name:
// gpus.hotgpu.dev/container.<name>: "2", "0,GPU-…", or MIG devices by name
// ("0:1") or UUID ("MIG-…").
const AnnotationPrefix = "gpus.hotgpu.dev/container."

// Env variables that carry a kubelet allocation into the container.
const (
	EnvHotGPU = "HOTGPU_VISIBLE_DEVICES"
	EnvNVIDIA = "NVIDIA_VISIBLE_DEVICES"
)

// AllocationAnnotation carries the secret token of a kubelet allocation:
// the device plugin returns it in its Allocate answer, kubelet puts it on
// the container (never on the pod, so pod authors cannot set it), and the
// NRI plugin lets a container claim an allocation only with the matching
// token. Environment variables are no such proof: any pod can set them.
const AllocationAnnotation = "gpus.hotgpu.dev/allocation"

// HolderAnnotation on a pod names, by UID, the GPUAttachment whose holder
// pod it is: hotgpud's node agent creates the holder so that kubelet and
// ResourceQuota account for an attached GPU, and moves the holder's kubelet
// allocation into the attachment's target. The NRI plugin gives the
// holder's container no GPU, but only when the agent confirms the claim: a
// pod that merely carries the annotation gets its GPUs as any pod.
const HolderAnnotation = "gpus.hotgpu.dev/holder-of"

// HotplugAnnotation on a pod, "true", asks that its containers be made
// ready for live attach: created with the driver's user-space (libraries,
// their links and linker cache) and no GPU, so a later attach only adds
// the GPU. It is checked like a GPU annotation: only the namespaces the
// configuration lists may set it.
const HotplugAnnotation = "gpus.hotgpu.dev/hotplug"

// MaxIDs bounds how many GPU ids one request may list.
const MaxIDs = 64

// ErrNamespaceNotAllowed is returned for annotations from a namespace the
// configuration does not list.
var ErrNamespaceNotAllowed = errors.New("namespace not allowed")

// Request asks for either Count GPUs of hotgpu's choosing or the listed IDs
// (indices, UUIDs or MIG device names and UUIDs, as written by the user).
type Request struct {
	Count int
	IDs   []string
}

// N is the number of GPUs the request asks for.
func (r Request) N() int {
	if len(r.IDs) > 0 {
		return len(r.IDs)
	}
	return r.Count
}

func (r Request) String() string {
	if len(r.IDs) > 0 {
		return strings.Join(r.IDs, ",")
	}
	return strconv.Itoa(r.Count)
}

// Policy decides which namespaces may ask for GPUs by annotation.
type Policy struct {
	Namespaces      []string
	MaxPerContainer int
}

// AnnotationKey returns the annotation that asks GPUs for container name.
func AnnotationKey(container string) string { return AnnotationPrefix + container }

// FromAnnotations finds and checks the request for container in the pod's
// annotations. ok is false when the pod asks nothing for that container.
// Errors name the annotation.
func (p Policy) FromAnnotations(namespace, container string, annotations map[string]string) (req Request, ok bool, err error) {
	key := AnnotationKey(container)
	value, ok := annotations[key]
	if !ok {
		return Request{}, false, nil
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("annotation %s=%q: %w", key, truncate(value), err)
		}
	}()
	if !slices.Contains(p.Namespaces, namespace) {
		return Request{}, true, fmt.Errorf("%w: namespace %q may not request GPUs by annotation (allowed: %s)",
			ErrNamespaceNotAllowed, namespace, listOrNone(p.Namespaces))
	}
	req, err = ParseRequest(value)
	if err != nil {
		return Request{}, true, err
	}
	if req.N() > p.MaxPerContainer {
		return Request{}, true, fmt.Errorf("%d GPUs requested, at most %d allowed per container", req.N(), p.MaxPerContainer)
	}
	return req, true, nil
}

// Hotplug reports whether the pod's annotations ask for its containers to
// be made ready for live attach (HotplugAnnotation). "false" asks nothing;
// any value but "true" and "false", or the annotation in a namespace the
// configuration does not list, is an error that names the annotation.
func (p Policy) Hotplug(namespace string, annotations map[string]string) (bool, error) {
	value, ok := annotations[HotplugAnnotation]
	if !ok || value == "false" {
		return false, nil
	}
	if value != "true" {
		return false, fmt.Errorf("annotation %s=%q: give \"true\" or \"false\"", HotplugAnnotation, truncate(value))
	}
	if !slices.Contains(p.Namespaces, namespace) {
		return false, fmt.Errorf("annotation %s: %w: namespace %q may not ask for GPUs by annotation (allowed: %s)",
			HotplugAnnotation, ErrNamespaceNotAllowed, namespace, listOrNone(p.Namespaces))
	}
	return true, nil
}

// ParseRequest reads "N" (a count) or a comma-separated list of GPU indices
// and UUIDs.
func ParseRequest(value string) (Request, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return Request{}, errors.New("empty value: give a count (\"1\") or GPU ids (\"0,GPU-…\")")
	}
	if !strings.ContainsAny(v, ",:") && !strings.HasPrefix(strings.ToUpper(v), "GPU-") && !strings.HasPrefix(strings.ToUpper(v), "MIG-") {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Request{}, fmt.Errorf("not a number: give a count (\"1\") or GPU ids (\"0,GPU-…\")")
		}
		if n < 1 {
			return Request{}, fmt.Errorf("count must be at least 1, got %d", n)
		}
		if n > MaxIDs {
			return Request{}, fmt.Errorf("count %d is more than the %d GPUs a node can have", n, MaxIDs)
		}
		return Request{Count: n}, nil
	}
	ids, err := ParseIDs(v)
	if err != nil {
		return Request{}, err
	}
	return Request{IDs: ids}, nil
}

// ParseIDs reads a comma-separated list of GPU ids: decimal indices, NVIDIA
// UUIDs (GPU-<hex and dashes>), MIG device names ("<gpu>:<mig>", decimal)
// and MIG UUIDs (MIG-<hex and dashes>). Anything else — paths, globs, "all" —
// is refused, so user input can never name a device node.
func ParseIDs(v string) ([]string, error) {
	parts := strings.Split(v, ",")
	if len(parts) > MaxIDs {
		return nil, fmt.Errorf("%d GPU ids listed, at most %d allowed", len(parts), MaxIDs)
	}
	ids := make([]string, 0, len(parts))
	for _, p := range parts {
		id := strings.TrimSpace(p)
		if err := ValidateID(id); err != nil {
			return nil, err
		}
		if slices.Contains(ids, id) {
			return nil, fmt.Errorf("GPU %s listed twice", id)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ValidateID accepts a GPU index ("3"), a GPU UUID ("GPU-8ac5…"), a MIG
// device name ("3:1") or a MIG UUID ("MIG-2d88…").
func ValidateID(id string) error {
	gpuIndex, migIndex, isMIGName := strings.Cut(id, ":")
	switch {
	case id == "":
		return errors.New("empty GPU id in list")
	case isIndex(id):
		return nil
	case isMIGName && isIndex(gpuIndex) && isIndex(migIndex):
		return nil
	case isUUID(id, "GPU-"), isUUID(id, "MIG-"):
		return nil
	default:
		return fmt.Errorf("%q is not a GPU index or UUID, nor a MIG device name (\"0:1\") or UUID", truncate(id))
	}
}

// migProfileName is a MIG profile as NVIDIA's tools name it: "1g.5gb",
// "1c.2g.10gb", "1g.10gb+me", "1g.12gb-me", "1g.5gb+me.all". It is compiled
// at first use, not at start: every hotgpu CLI process links this package,
// and compiling it at init was a tenth of a CLI attach's start.
var migProfileName = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([0-9]{1,2}c\.)?[0-9]{1,2}g\.[0-9]{1,4}gb([+-][a-z.]{1,12})?$`)
})

// ValidateMIGProfile accepts a MIG profile name ("1g.5gb").
func ValidateMIGProfile(profile string) error {
	if !migProfileName().MatchString(profile) {
		return fmt.Errorf("%q is not a MIG profile name such as \"1g.5gb\" or \"3g.20gb\"", truncate(profile))
	}
	return nil
}

func isIndex(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isUUID(s, prefix string) bool {
	if len(s) < 8 || len(s) > 80 || !strings.EqualFold(s[:4], prefix) {
		return false
	}
	for _, c := range s[4:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

// VisibleDevices returns the GPU ids a container's environment names in
// HOTGPU_VISIBLE_DEVICES (preferred) or NVIDIA_VISIBLE_DEVICES, and which
// variable it came from. The NVIDIA values "all", "none" and "void" name no
// specific GPU and yield no ids: images set NVIDIA_VISIBLE_DEVICES=all by
// default, and that must never be read as a request for every GPU.
func VisibleDevices(env []string) (ids []string, from string, err error) {
	var hot, nv string
	var hasHot, hasNV bool
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case EnvHotGPU:
			hot, hasHot = v, true
		case EnvNVIDIA:
			nv, hasNV = v, true
		}
	}
	switch {
	case hasHot:
		from, v := EnvHotGPU, hot
		if v == "" || v == "none" || v == "void" {
			return nil, from, nil
		}
		ids, err := ParseIDs(v)
		if err != nil {
			return nil, from, fmt.Errorf("env %s: %w", from, err)
		}
		return ids, from, nil
	case hasNV:
		from, v := EnvNVIDIA, nv
		if v == "" || v == "all" || v == "none" || v == "void" {
			return nil, from, nil
		}
		ids, err := ParseIDs(v)
		if err != nil {
			return nil, from, fmt.Errorf("env %s: %w", from, err)
		}
		return ids, from, nil
	}
	return nil, "", nil
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none configured"
	}
	return strings.Join(l, ", ")
}

// truncate keeps error messages and logs bounded when input is hostile.
func truncate(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
