package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const (
	uuid0 = "GPU-2bd2f7a1-96c5-5e59-9d3c-0c5a0f1b4a11"
	mig0  = "MIG-2d887421-f52a-575a-80ac-2cd9f2e9efc2"
)

func TestFromAnnotations(t *testing.T) {
	p := Policy{Namespaces: []string{"ml"}, MaxPerContainer: 2}
	key := AnnotationKey("train")
	tests := []struct {
		name    string
		ns      string
		value   *string
		want    Request
		wantErr string
		isNS    bool
	}{
		{name: "no annotation", ns: "ml"},
		{name: "count", ns: "ml", value: ptr("2"), want: Request{Count: 2}},
		{name: "ids", ns: "ml", value: ptr("0, " + uuid0), want: Request{IDs: []string{"0", uuid0}}},
		{name: "namespace not allowed", ns: "default", value: ptr("1"), wantErr: "namespace not allowed", isNS: true},
		{name: "not a number", ns: "ml", value: ptr("two"), wantErr: "not a number"},
		{name: "zero", ns: "ml", value: ptr("0x"), wantErr: "not a number"},
		{name: "negative", ns: "ml", value: ptr("-1"), wantErr: "at least 1"},
		{name: "over limit", ns: "ml", value: ptr("3"), wantErr: "3 GPUs requested, at most 2"},
		{name: "path is refused", ns: "ml", value: ptr("0,/dev/nvidia1"), wantErr: `"/dev/nvidia1" is not a GPU index or UUID`},
		{name: "all is refused", ns: "ml", value: ptr("all,0"), wantErr: `"all" is not a GPU index`},
		{name: "duplicate", ns: "ml", value: ptr("1,1"), wantErr: "listed twice"},
		{name: "empty", ns: "ml", value: ptr(" "), wantErr: "empty value"},
		{name: "MIG device by name", ns: "ml", value: ptr("0:1"), want: Request{IDs: []string{"0:1"}}},
		{name: "MIG devices by name and UUID", ns: "ml", value: ptr("0:1," + mig0), want: Request{IDs: []string{"0:1", mig0}}},
		{name: "MIG name needs two indices", ns: "ml", value: ptr("0:"), wantErr: `"0:" is not a GPU index or UUID`},
		{name: "MIG name is not a path", ns: "ml", value: ptr("0:1/.."), wantErr: "is not a GPU index or UUID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{"unrelated": "x"}
			if tt.value != nil {
				ann[key] = *tt.value
			}
			req, ok, err := p.FromAnnotations(tt.ns, "train", ann)
			if ok != (tt.value != nil) {
				t.Fatalf("ok = %v", ok)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), key) {
					t.Errorf("error %q does not name the annotation", err)
				}
				if errors.Is(err, ErrNamespaceNotAllowed) != tt.isNS {
					t.Errorf("errors.Is(ErrNamespaceNotAllowed) = %v", !tt.isNS)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Count != tt.want.Count || !slices.Equal(req.IDs, tt.want.IDs) {
				t.Fatalf("request = %+v, want %+v", req, tt.want)
			}
		})
	}
}

func TestVisibleDevices(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    []string
		from    string
		wantErr bool
	}{
		{name: "none", env: []string{"PATH=/bin"}},
		{name: "hotgpu wins", env: []string{EnvNVIDIA + "=3", EnvHotGPU + "=1,2"}, want: []string{"1", "2"}, from: EnvHotGPU},
		{name: "nvidia ids", env: []string{EnvNVIDIA + "=" + uuid0}, want: []string{uuid0}, from: EnvNVIDIA},
		{name: "nvidia all is not a request", env: []string{EnvNVIDIA + "=all"}, from: EnvNVIDIA},
		{name: "void", env: []string{EnvNVIDIA + "=void"}, from: EnvNVIDIA},
		{name: "garbage", env: []string{EnvHotGPU + "=../../x"}, from: EnvHotGPU, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, from, err := VisibleDevices(tt.env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if from != tt.from || !slices.Equal(ids, tt.want) {
				t.Fatalf("got %v from %q, want %v from %q", ids, from, tt.want, tt.from)
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"1", "0,1", uuid0, "all", "-3", "/dev/nvidia0", "1,,2", "GPU-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req, err := ParseRequest(v)
		if err != nil {
			return
		}
		if req.N() < 1 || req.N() > MaxIDs {
			t.Fatalf("accepted request of %d GPUs from %q", req.N(), v)
		}
		for _, id := range req.IDs {
			if strings.ContainsAny(id, "/.* ") || ValidateID(id) != nil {
				t.Fatalf("accepted id %q from %q", id, v)
			}
		}
	})
}

func ptr(s string) *string { return &s }

func TestHotplug(t *testing.T) {
	p := Policy{Namespaces: []string{"ml"}, MaxPerContainer: 4}
	for name, tc := range map[string]struct {
		ns, value string
		set, want bool
		err       string
	}{
		"absent":            {ns: "ml"},
		"true":              {ns: "ml", value: "true", set: true, want: true},
		"false":             {ns: "default", value: "false", set: true},
		"other value":       {ns: "ml", value: "yes", set: true, err: `give "true" or "false"`},
		"namespace refused": {ns: "default", value: "true", set: true, err: "namespace not allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			ann := map[string]string{}
			if tc.set {
				ann[HotplugAnnotation] = tc.value
			}
			got, err := p.Hotplug(tc.ns, ann)
			if got != tc.want || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Hotplug = %v, %v; want %v, %q", got, err, tc.want, tc.err)
			}
		})
	}
}
