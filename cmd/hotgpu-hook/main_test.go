package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	bundle := t.TempDir()
	if err := os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.2.0","root":{"path":"rootfs"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "id": "c1", "status": "creating", "bundle": bundle})
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no command", nil, 2, "", "update-ldcache"},
		{"help", []string{"--help"}, 0, "OCI hook", ""},
		{"command help", []string{"update-ldcache", "--help"}, 0, "-folder", ""},
		{"unknown command", []string{"frob"}, 2, "", "hotgpu-hook: unknown command"},
		{"unknown flag", []string{"update-ldcache", "--bogus"}, 2, "", "hotgpu-hook: flag provided but not defined"},
		{"no folder", []string{"update-ldcache", "--ldconfig", "/bin/true"}, 1, "", "hotgpu-hook: no --folder"},
		{"writes conf", []string{"update-ldcache", "--folder", "/usr/lib64", "--ldconfig", "/bin/true"}, 0, "", ""},
		{"symlinks help", []string{"create-symlinks", "--help"}, 0, "TARGET::LINK", ""},
		{"bad link", []string{"create-symlinks", "--link", "libcuda.so.1"}, 1, "", "hotgpu-hook: invalid --link"},
		{"creates link", []string{"create-symlinks", "--link", "libcuda.so.1::/usr/lib64/libcuda.so"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, bytes.NewReader(state), &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Fatalf("exit %d stdout %q stderr %q, want %d %q %q", code, out.String(), errOut.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs/etc/ld.so.conf.d/00-hotgpu.conf")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(bundle, "rootfs/usr/lib64/libcuda.so")); err != nil || target != "libcuda.so.1" {
		t.Fatalf("create-symlinks made %q, %v", target, err)
	}
}
