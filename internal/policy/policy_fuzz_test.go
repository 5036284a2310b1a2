package policy

import (
	"errors"
	"strings"
	"testing"
)

// FuzzFromAnnotations feeds hostile pod annotations (any namespace, any
// container name, any value) through the policy: nothing outside the allowed
// namespace is ever accepted, no request exceeds the per-container limit, and
// no accepted id could name a path.
func FuzzFromAnnotations(f *testing.F) {
	for _, s := range [][3]string{
		{"ml", "app", "2"}, {"default", "app", "1"}, {"ml", "app", "0," + uuid0},
		{"ml", "../app", "1"}, {"ml ", "app", "1"}, {"ML", "app", "1"}, {"", "", ""},
		{"ml", "app", "/dev/nvidia0"}, {"ml", "app", "0:1"}, {"ml", "app", "1:0,MIG-2d887421-f52a"}, {"ml", "app", "99999999999999999999"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	p := Policy{Namespaces: []string{"ml"}, MaxPerContainer: 2}
	f.Fuzz(func(t *testing.T, ns, container, value string) {
		req, ok, err := p.FromAnnotations(ns, container, map[string]string{AnnotationKey(container): value})
		if !ok {
			t.Fatalf("annotation %q not found", AnnotationKey(container))
		}
		if err != nil {
			if ns != "ml" && !errors.Is(err, ErrNamespaceNotAllowed) {
				t.Fatalf("namespace %q refused for the wrong reason: %v", ns, err)
			}
			// Namespace and container names are bounded by Kubernetes (63
			// bytes); the value is not, so messages carry only its start.
			if len(value) > 100 && strings.Contains(err.Error(), value) {
				t.Fatalf("error message carries the whole %d-byte value: hostile input reaches logs unbounded", len(value))
			}
			return
		}
		if ns != "ml" {
			t.Fatalf("namespace %q is not allowed, yet %q was accepted", ns, value)
		}
		if n := req.N(); n < 1 || n > p.MaxPerContainer {
			t.Fatalf("accepted %d GPUs (limit %d) from %q", n, p.MaxPerContainer, value)
		}
		checkIDs(t, req.IDs, value)
	})
}

// FuzzVisibleDevices: the visible-devices env (set by whoever writes the pod
// spec or the image) yields only validated ids, and the NVIDIA catch-alls
// never turn into a request.
func FuzzVisibleDevices(f *testing.F) {
	for _, s := range [][2]string{
		{"all", ""}, {"0,1", ""}, {"", "3"}, {"void", "none"}, {uuid0, "../../etc"}, {"0,0", ""}, {"1\n2", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, nv, hot string) {
		env := []string{"PATH=/bin", EnvNVIDIA + "=" + nv}
		if hot != "" {
			env = append(env, EnvHotGPU+"="+hot)
		}
		ids, from, err := VisibleDevices(env)
		if err != nil {
			return
		}
		if hot != "" && from != EnvHotGPU {
			t.Fatalf("%s set but ids came from %q", EnvHotGPU, from)
		}
		if hot == "" && strings.TrimSpace(nv) == "all" && len(ids) != 0 {
			t.Fatalf("NVIDIA_VISIBLE_DEVICES=all became a request for %v", ids)
		}
		if len(ids) > MaxIDs {
			t.Fatalf("%d ids accepted", len(ids))
		}
		checkIDs(t, ids, nv+"|"+hot)
	})
}

func checkIDs(t *testing.T, ids []string, from string) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range ids {
		if ValidateID(id) != nil || strings.ContainsAny(id, "/.*\\ \t\n\x00") {
			t.Fatalf("accepted id %q from %q", id, from)
		}
		if seen[id] {
			t.Fatalf("accepted id %q twice from %q", id, from)
		}
		seen[id] = true
	}
}
