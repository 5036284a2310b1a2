package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels, annotations and the finalizer the node agent sets.
const (
	// NodeLabel is the node of the attachment's pod. The kubectl plugin sets
	// it when it creates an attachment; the node's agent sets it on one
	// created without it. Each agent watches only attachments labelled with
	// its own node (plus the few unlabelled ones), so no agent needs every
	// attachment of the cluster.
	NodeLabel = "hotgpu.dev/node"
	// Finalizer keeps a deleted attachment until its GPUs are detached.
	Finalizer = "hotgpu.dev/detach"
)

// DetachPolicy says what deleting an attachment does to a GPU a process
// still holds.
// +kubebuilder:validation:Enum=Graceful;Force
type DetachPolicy string

// Detach policies.
const (
	// Graceful refuses to detach while a process holds the GPU: the
	// attachment stays, phase Detaching, until the process exits.
	Graceful DetachPolicy = "Graceful"
	// Force detaches anyway; the GPU is quarantined until the process exits.
	Force DetachPolicy = "Force"
)

// Phase is where an attachment stands.
// +kubebuilder:validation:Enum=Pending;Attached;Detaching;Failed
type Phase string

// Phases.
const (
	Pending   Phase = "Pending"
	Attached  Phase = "Attached"
	Detaching Phase = "Detaching"
	Failed    Phase = "Failed"
)

// GPUAttachmentSpec says which GPUs go to which container. Everything but
// detachPolicy is immutable.
//
// +kubebuilder:validation:XValidation:rule="has(self.count) != has(self.gpus)",message="exactly one of count or gpus must be set"
// +kubebuilder:validation:XValidation:rule="has(self.count) == has(oldSelf.count) && has(self.gpus) == has(oldSelf.gpus) && has(self.container) == has(oldSelf.container)",message="spec is immutable except detachPolicy"
type GPUAttachmentSpec struct {
	// PodName is the pod, in the attachment's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="podName is immutable"
	PodName string `json:"podName"`
	// Container is the pod's container; optional when the pod has one.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="container is immutable"
	Container string `json:"container,omitempty"`
	// Count asks for any N free GPUs (best connected ones first).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="count is immutable"
	Count *int32 `json:"count,omitempty"`
	// GPUs asks for these GPUs, by index or UUID.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="gpus is immutable"
	// +listType=atomic
	GPUs []string `json:"gpus,omitempty"`
	// DetachPolicy: Graceful (default) refuses to detach a GPU a process
	// holds; Force detaches it anyway. It may be changed, to end a Graceful
	// detach that waits for a process.
	// +optional
	// +kubebuilder:default=Graceful
	DetachPolicy DetachPolicy `json:"detachPolicy,omitempty"`
}

// AttachedGPU is one GPU given to the container.
type AttachedGPU struct {
	Index  int    `json:"index"`
	UUID   string `json:"uuid"`
	Device string `json:"device"` // its node in the container, /dev/nvidiaN
}

// GPUAttachmentStatus is written by the node's agent only.
type GPUAttachmentStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// NodeName is the node whose agent handles the attachment.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// +optional
	// +listType=atomic
	GPUs []AttachedGPU `json:"gpus,omitempty"`
	// Message says why the phase is what it is.
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// GPUAttachment is GPUs attached live to a running pod's container. Creating
// one attaches; deleting it detaches.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=gpuatt,categories=hotgpu
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.podName`
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.spec.container`
// +kubebuilder:printcolumn:name="GPUs",type=string,JSONPath=`.status.gpus[*].index`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GPUAttachment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec GPUAttachmentSpec `json:"spec"`
	// +optional
	Status GPUAttachmentStatus `json:"status,omitempty"`
}

// GPUAttachmentList is a list of GPUAttachments.
//
// +kubebuilder:object:root=true
type GPUAttachmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GPUAttachment `json:"items"`
}
