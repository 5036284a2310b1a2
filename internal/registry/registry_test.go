package registry

import (
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	r := New()
	r.Put(Container{ID: "abcdef123456", Name: "train", PodNamespace: "ml", PodName: "p"})
	r.Put(Container{ID: "abcdef999999", Name: "sidecar", PodNamespace: "ml", PodName: "p"})
	r.Put(Container{ID: "0123456789ab", Name: "app", PodNamespace: "ml", PodName: "q", PID: 42})
	r.Put(Container{ID: "0123456789ab", Name: "app", PodNamespace: "ml", PodName: "q"}) // a later event without pid keeps it

	if c, err := r.FindPod("ml", "q", ""); err != nil || c.PID != 42 {
		t.Fatalf("FindPod single = %+v, %v", c, err)
	}
	if _, err := r.FindPod("ml", "p", ""); err == nil || !strings.Contains(err.Error(), "sidecar, train") {
		t.Fatalf("ambiguous pod error = %v", err)
	}
	if c, err := r.FindPod("ml", "p", "train"); err != nil || c.ID != "abcdef123456" {
		t.Fatalf("FindPod by name = %+v, %v", c, err)
	}
	if _, err := r.FindID("abcdef"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("ambiguous prefix err = %v", err)
	}
	if _, err := r.FindID("abc"); err == nil || !strings.Contains(err.Error(), "at least 6") {
		t.Fatalf("short prefix err = %v", err)
	}
	if c, err := r.FindID("012345"); err != nil || c.Name != "app" {
		t.Fatalf("FindID prefix = %+v, %v", c, err)
	}
	r.Replace([]Container{{ID: "x"}})
	if r.Len() != 1 || r.Has("0123456789ab") {
		t.Fatal("Replace kept old containers")
	}
}
