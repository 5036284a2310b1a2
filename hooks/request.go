package hooks

import (
	"errors"
	"fmt"
	"strings"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/policy"
)

// AnnotationDevices is the OCI annotation a container asks for GPUs with
// (podman --annotation, docker --annotation, a runc bundle):
// "0,GPU-…" (indices or UUIDs) or "all". It wins over the environment.
const AnnotationDevices = "gpus.hotgpu.dev/devices"

// kubernetesAnnotations mark containers a Kubernetes runtime made. Their
// GPUs come from kubelet (device plugin, CDI) or hotgpud's NRI plugin; their
// environment and annotations are written by whoever may create pods, so the
// hook never reads a GPU request from them.
var kubernetesAnnotations = []string{
	"io.kubernetes.pod.namespace",         // CRI-O
	"io.kubernetes.cri.sandbox-namespace", // containerd CRI
	"io.kubernetes.cri-o.ContainerType",   // CRI-O, older
	"io.kubernetes.cri.container-type",    // containerd CRI
}

// gpuRequest is what a container asks for: IDs or All; neither means nothing.
type gpuRequest struct {
	IDs  []string
	All  bool
	From string // where it came from, for messages
	// deniedAll is set when the environment asked for "all" and the hook
	// may not give it.
	deniedAll bool
}

func (r gpuRequest) empty() bool { return !r.All && len(r.IDs) == 0 }

// errAllRefused is returned when a container explicitly asks for all GPUs
// and the hook's configuration does not allow it.
var errAllRefused = errors.New(`"all" GPUs is not allowed by this hook's configuration (run it with --allow-all to permit it)`)

// requestOf reads the container's GPU request from its annotation, else from
// HOTGPU_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES in its environment. All
// of it is user input: ids are validated by policy (indices and UUIDs only,
// never paths), and "all" is honoured only when allowAll. CUDA images set
// NVIDIA_VISIBLE_DEVICES=all by default, so "all" from the environment
// without allowAll asks for nothing instead of failing the container.
func requestOf(spec *oci.Spec, allowAll bool) (gpuRequest, error) {
	if v, ok := spec.Annotations[AnnotationDevices]; ok {
		r := gpuRequest{From: "annotation " + AnnotationDevices}
		if strings.TrimSpace(v) == "all" {
			if !allowAll {
				return gpuRequest{}, fmt.Errorf("%s: %w", r.From, errAllRefused)
			}
			r.All = true
			return r, nil
		}
		ids, err := policy.ParseIDs(v)
		if err != nil {
			return gpuRequest{}, fmt.Errorf("%s: %w", r.From, err)
		}
		r.IDs = ids
		return r, nil
	}
	var env []string
	if spec.Process != nil {
		env = spec.Process.Env
	}
	if name, v := visibleVar(env); strings.TrimSpace(v) == "all" {
		return gpuRequest{All: allowAll, deniedAll: !allowAll, From: "env " + name}, nil
	}
	ids, from, err := policy.VisibleDevices(env)
	if err != nil {
		return gpuRequest{}, err
	}
	return gpuRequest{IDs: ids, From: "env " + from}, nil
}

// visibleVar returns the variable policy.VisibleDevices reads (HOTGPU_…
// over NVIDIA_…) and its value; the last definition of a name wins, as in
// execve.
func visibleVar(env []string) (name, value string) {
	var hot, nv string
	var hasHot, hasNV bool
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case policy.EnvHotGPU:
			hot, hasHot = v, true
		case policy.EnvNVIDIA:
			nv, hasNV = v, true
		}
	}
	switch {
	case hasHot:
		return policy.EnvHotGPU, hot
	case hasNV:
		return policy.EnvNVIDIA, nv
	}
	return "", ""
}

// isKubernetes reports whether a Kubernetes runtime made the container.
func isKubernetes(spec *oci.Spec) bool {
	for _, k := range kubernetesAnnotations {
		if _, ok := spec.Annotations[k]; ok {
			return true
		}
	}
	return false
}
