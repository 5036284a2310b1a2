package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

func TestAttachFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"neither", []string{"attach", "p"}, "exactly one of --count N or --gpu"},
		{"both", []string{"attach", "p", "--count", "1", "--gpu", "0"}, "exactly one of --count N or --gpu"},
		{"nine", []string{"attach", "p", "--count", "9"}, "--count must be 1..8"},
		{"output", []string{"attach", "p", "--count", "1", "-o", "wide"}, "--output must be json or yaml"},
		{"no pod", []string{"attach", "--count", "1"}, "accepts 1 arg"},
		{"detach neither", []string{"detach", "p"}, "exactly one of --gpu ID,... or --all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newRoot(genericiooptions.IOStreams{Out: &out, ErrOut: &out})
			cmd.SetArgs(tc.args)
			cmd.SetOut(&out)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v: %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestAttachObject(t *testing.T) {
	a := &attachOptions{count: 2}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nb", Namespace: "team-a", UID: "u1"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	att := a.object(p)
	if att.GenerateName != "nb-" || att.Namespace != "team-a" || att.Labels[hotgpuv1.NodeLabel] != "n1" ||
		len(att.OwnerReferences) != 1 || att.OwnerReferences[0].UID != "u1" || *att.Spec.Count != 2 || att.Spec.GPUs != nil {
		t.Fatalf("attachment %+v", att)
	}
}

func stored(name, pod string, gpus ...int) *hotgpuv1.GPUAttachment {
	a := &hotgpuv1.GPUAttachment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a"},
		Spec: hotgpuv1.GPUAttachmentSpec{PodName: pod}}
	a.SetGroupVersionKind(hotgpuv1.Kind)
	for _, g := range gpus {
		a.Status.GPUs = append(a.Status.GPUs, hotgpuv1.AttachedGPU{Index: g, UUID: "GPU-" + string(rune('a'+g))})
	}
	return a
}

func TestDetachSelects(t *testing.T) {
	s := runtime.NewScheme() // empty: the fake keeps the objects unstructured, as the API server sends them
	var objs []runtime.Object
	for _, a := range []*hotgpuv1.GPUAttachment{stored("pair", "p", 1, 2), stored("one", "p", 3), stored("other", "q", 4)} {
		u, err := encode(a)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, u)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{hotgpuv1.Resource: "GPUAttachmentList"}, objs...)
	c := &clients{dyn: dyn, namespace: "team-a"}
	for _, tc := range []struct {
		name    string
		opts    detachOptions
		want    string
		wantErr string
	}{
		{"all", detachOptions{all: true}, "one pair", ""},
		{"whole attachment", detachOptions{gpus: []string{"1", "2"}}, "pair", ""},
		{"by uuid", detachOptions{gpus: []string{"GPU-d"}}, "one", ""},
		{"part of one", detachOptions{gpus: []string{"1"}}, "", "detach all of them together"},
		{"not attached", detachOptions{gpus: []string{"4"}}, "", "no attachment of pod p holds GPU(s) [4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := tc.opts.selectAttachments(context.Background(), c, "p")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			var names []string
			for _, a := range sel {
				names = append(names, a.Name)
			}
			if err != nil || strings.Join(names, " ") != tc.want {
				t.Fatalf("selected %v (%v), want %s", names, err, tc.want)
			}
		})
	}
}
