package k8s

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

// fromUnstructured converts an informer's object into the typed API.
func fromUnstructured(obj any) (*hotgpuv1.GPUAttachment, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var a hotgpuv1.GPUAttachment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a); err != nil {
		return nil, fmt.Errorf("failed to decode GPUAttachment %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &a, nil
}

func toUnstructured(a *hotgpuv1.GPUAttachment) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(hotgpuv1.Kind)
	return u, nil
}

// podIndex indexes an attachment by its pod, "namespace/podName".
func podIndex(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	pod, _, _ := unstructured.NestedString(u.Object, "spec", "podName")
	return []string{u.GetNamespace() + "/" + pod}, nil
}
