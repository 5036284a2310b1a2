package cdi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/nvml"
)

func TestWriteIsReadByTheLibrary(t *testing.T) {
	inv := simInventory(t, "dgxa100", func(s *nvml.Sim) error { return s.EnableMIG("1", "7g.40gb") })
	spec, err := Generate(inv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"nvidia.com-gpu.json", "nvidia.com-gpu.json"} { // second write replaces
		if _, err := Write(spec, dir, name); err != nil {
			t.Fatal(err)
		}
	}
	assertOnlyFiles(t, dir, "nvidia.com-gpu.json")

	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("library rejected the spec: %v", errs)
	}
	ociSpec := &oci.Spec{}
	if _, err := cache.InjectDevices(ociSpec, "nvidia.com/gpu=3", "nvidia.com/gpu=1:0"); err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int64{}
	for _, d := range ociSpec.Linux.Devices {
		got[d.Path] = [2]int64{d.Major, d.Minor}
	}
	want := map[string][2]int64{
		"/dev/nvidia3": {195, 3}, "/dev/nvidia1": {195, 1},
		"/dev/nvidiactl": {195, 255}, "/dev/nvidia-uvm": {509, 0}, "/dev/nvidia-uvm-tools": {509, 1},
		"/dev/nvidia-caps/nvidia-cap138": {236, 138}, "/dev/nvidia-caps/nvidia-cap139": {236, 139},
	}
	for path, numbers := range want {
		if got[path] != numbers {
			t.Errorf("%s injected as %v, want %v (all: %v)", path, got[path], numbers, got)
		}
	}
}

func TestWriteDefaultsToYAML(t *testing.T) {
	spec, err := Generate(simInventory(t, "pcie8", nil))
	if err != nil {
		t.Fatal(err)
	}
	path, err := Write(spec, filepath.Join(t.TempDir(), "new", "cdi"), "hotgpu")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "hotgpu.yaml" {
		t.Fatalf("wrote %s, want hotgpu.yaml", path)
	}
	if _, err := cdi.ReadSpec(path, 0); err != nil {
		t.Fatalf("library cannot read the written spec: %v", err)
	}
}

func TestWriteFailuresLeaveNothing(t *testing.T) {
	spec, err := Generate(simInventory(t, "dgxa100", nil))
	if err != nil {
		t.Fatal(err)
	}
	invalid := *spec
	invalid.Devices = append([]specs.Device{{Name: "bad name!"}}, spec.Devices...)

	parent := t.TempDir()
	notADir := filepath.Join(parent, "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	occupied := t.TempDir()
	if err := os.Mkdir(filepath.Join(occupied, "spec.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Add a file to the directory in the way so rename cannot replace it.
	if err := os.WriteFile(filepath.Join(occupied, "spec.yaml", "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	invalidDir := t.TempDir()
	tests := []struct {
		name, dir, file string
		spec            *specs.Spec
		want            string
		left            []string
	}{
		{"unwritable dir", filepath.Join(notADir, "cdi"), "spec.yaml", spec, "writable", nil},
		{"rename refused", occupied, "spec.yaml", spec, "failed to write", []string{"spec.yaml"}},
		{"invalid spec", invalidDir, "spec.yaml", &invalid, "bad name!", nil},
		{"path as name", invalidDir, "../spec.yaml", spec, "plain file name", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Write(tt.spec, tt.dir, tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if _, statErr := os.Stat(tt.dir); statErr == nil {
				assertOnlyFiles(t, tt.dir, tt.left...)
			}
		})
	}
}

func TestEncodeRejectsUnknownFormat(t *testing.T) {
	if _, err := Encode(&specs.Spec{}, "toml"); err == nil || !strings.Contains(err.Error(), "yaml or json") {
		t.Fatalf("got %v", err)
	}
}

func assertOnlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v (no temporary files)", dir, got, want)
	}
}
