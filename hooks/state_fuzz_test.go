package hooks

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/policy"
)

// FuzzReadContainer: the OCI state on stdin and the bundle's config.json
// (which carries user input: env, annotations) are parsed with bounded
// reads, and the hook only ever proceeds with an absolute, clean root path.
func FuzzReadContainer(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2","id":"c1","pid":42}`), []byte(`{"root":{"path":"rootfs"}}`))
	f.Add([]byte(`{"id":"c1","bundle":"relative"}`), []byte(`{"root":{"path":"/abs/root"}}`))
	f.Add([]byte(`{"id":"c1"}`), []byte(`{"root":{"path":"../../../.."}}`))
	f.Add([]byte(`{"id":"c1"}`), []byte(`{"root":{}}`))
	f.Add([]byte(`{"id":"c1"}`), []byte(`{"root":{"path":"rootfs"},"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]},"annotations":{"gpus.hotgpu.dev/devices":"0"}}`))
	f.Add([]byte(`[`), []byte(`{`))
	bundle := f.TempDir()
	f.Fuzz(func(t *testing.T, state, config []byte) {
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), config, 0o600); err != nil {
			t.Fatal(err)
		}
		// The runtime names the bundle; keep the fuzzed state but point it
		// at ours when it names none, so config.json parsing is reached.
		var m map[string]any
		if json.Unmarshal(state, &m) == nil && m != nil {
			if _, ok := m["bundle"]; !ok {
				m["bundle"] = bundle
				state, _ = json.Marshal(m)
			}
		}
		c, err := readContainer(bytes.NewReader(state))
		if err != nil {
			return
		}
		if !filepath.IsAbs(c.rootfs) || filepath.Clean(c.rootfs) != c.rootfs {
			t.Fatalf("root %q is not a clean absolute path (state %q, config %q)", c.rootfs, state, config)
		}
	})
}

// FuzzRequestOf: the GPU request a non-Kubernetes container makes through
// its annotation or environment is user input: only validated ids come out,
// and "all" only when the hook's configuration allows it.
func FuzzRequestOf(f *testing.F) {
	for _, s := range [][3]string{
		{"0,1", "", ""}, {"all", "", ""}, {"", "all", ""}, {"", "", "GPU-12345678"}, {"../../x", "", ""},
		{"", "0,0", ""}, {" all ", "", ""}, {"", "void", "none"}, {"/dev/nvidia0", "", ""},
	} {
		f.Add(s[0], s[1], s[2], false)
		f.Add(s[0], s[1], s[2], true)
	}
	f.Fuzz(func(t *testing.T, annotation, nvEnv, hotEnv string, allowAll bool) {
		spec := &oci.Spec{Process: &oci.Process{Env: []string{"PATH=/bin"}}, Annotations: map[string]string{}}
		if annotation != "" {
			spec.Annotations[AnnotationDevices] = annotation
		}
		if nvEnv != "" {
			spec.Process.Env = append(spec.Process.Env, policy.EnvNVIDIA+"="+nvEnv)
		}
		if hotEnv != "" {
			spec.Process.Env = append(spec.Process.Env, policy.EnvHotGPU+"="+hotEnv)
		}
		r, err := requestOf(spec, allowAll)
		if err != nil {
			return
		}
		if r.All && !allowAll {
			t.Fatalf("\"all\" granted without --allow-all: %+v", r)
		}
		if r.All && len(r.IDs) > 0 {
			t.Fatalf("request is both all and ids: %+v", r)
		}
		if len(r.IDs) > policy.MaxIDs {
			t.Fatalf("%d ids", len(r.IDs))
		}
		for _, id := range r.IDs {
			if policy.ValidateID(id) != nil || strings.ContainsAny(id, "/.") {
				t.Fatalf("id %q accepted from annotation %q env %q/%q", id, annotation, nvEnv, hotEnv)
			}
		}
	})
}

// FuzzReadGPUInfo: the driver's procfs "information" file is parsed into a
// GPU whose minor is always a GPU minor (0-254), never the control node's.
func FuzzReadGPUInfo(f *testing.F) {
	f.Add("Model: \t\t NVIDIA A100\nGPU UUID: \t GPU-1234\nDevice Minor: \t 3\n")
	f.Add("Device Minor: 255\n")
	f.Add("Device Minor: -1\n")
	f.Add("Device Minor: 99999999999999999999\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, info string) {
		path := filepath.Join(dir, "information")
		if err := os.WriteFile(path, []byte(info), 0o600); err != nil {
			t.Fatal(err)
		}
		g, err := readGPUInfo(path)
		if err != nil {
			return
		}
		if g.Minor < 0 || g.Minor >= 255 {
			t.Fatalf("minor %d accepted from %q", g.Minor, info)
		}
	})
}
