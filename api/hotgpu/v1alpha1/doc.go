// Package v1alpha1 is the hotgpu.dev/v1alpha1 API: GPUAttachment, a GPU
// attached live to a running pod's container, created by a tenant and carried
// out by the hotgpud of the pod's node.
//
// The Go types are the source; controller-gen (make generate) writes the
// deepcopy functions beside them and the CRD into deploy/crd. This package
// holds no logic: the node agent is in k8s/, the kubectl plugin in
// cmd/kubectl-hotgpu.
//
// +kubebuilder:object:generate=true
// +groupName=hotgpu.dev
package v1alpha1
