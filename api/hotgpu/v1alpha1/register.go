package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version name the API.
const (
	Group   = "hotgpu.dev"
	Version = "v1alpha1"
)

// SchemeGroupVersion is the API's group and version.
var SchemeGroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// Resource is the GPUAttachment resource, for dynamic clients and informers.
var Resource = SchemeGroupVersion.WithResource("gpuattachments")

// Kind is GPUAttachment's kind.
var Kind = SchemeGroupVersion.WithKind("GPUAttachment")

// AddToScheme registers the API's types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &GPUAttachment{}, &GPUAttachmentList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
