package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

// clients are the user's clients and namespace.
type clients struct {
	kube      kubernetes.Interface
	dyn       dynamic.Interface
	namespace string
}

func (o *options) clients() (*clients, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{kube: kube, dyn: dyn, namespace: ns}, nil
}

func (c *clients) attachments(ns string) dynamic.ResourceInterface {
	return c.dyn.Resource(hotgpuv1.Resource).Namespace(ns)
}

func decode(u *unstructured.Unstructured) (*hotgpuv1.GPUAttachment, error) {
	var a hotgpuv1.GPUAttachment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a); err != nil {
		return nil, fmt.Errorf("failed to decode GPUAttachment %s: %w", u.GetName(), err)
	}
	a.SetGroupVersionKind(hotgpuv1.Kind)
	return &a, nil
}

func encode(a *hotgpuv1.GPUAttachment) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(hotgpuv1.Kind)
	return u, nil
}

// waitFor watches the attachment until done says it is, the attachment is
// deleted (gone is then true), or timeout passes.
func (c *clients) waitFor(ctx context.Context, ns, name string, timeout time.Duration, done func(*hotgpuv1.GPUAttachment) bool) (last *hotgpuv1.GPUAttachment, gone bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	for {
		list, err := c.attachments(ns).List(ctx, sel)
		if err != nil {
			return last, false, err
		}
		if len(list.Items) == 0 {
			return last, true, nil
		}
		if last, err = decode(&list.Items[0]); err != nil || done(last) {
			return last, false, err
		}
		sel.ResourceVersion = list.GetResourceVersion()
		w, err := c.attachments(ns).Watch(ctx, sel)
		if err != nil {
			return last, false, err
		}
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue // a watch error: list again
			}
			if ev.Type == watch.Deleted {
				w.Stop()
				return last, true, nil
			}
			if last, err = decode(u); err != nil || done(last) {
				w.Stop()
				return last, false, err
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return last, false, fmt.Errorf("timed out after %s", timeout)
		}
	}
}

// print writes v as JSON or YAML (-o), or runs text.
func (o *options) print(v any, text func(io.Writer)) error {
	switch o.output {
	case "json":
		enc := json.NewEncoder(o.streams.Out)
		enc.SetIndent("", "    ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = o.streams.Out.Write(b)
		return err
	}
	text(o.streams.Out)
	return nil
}
