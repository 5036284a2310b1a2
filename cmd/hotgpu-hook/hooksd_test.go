package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/hookenv"
)

// hooksD is the podman / CRI-O hooks.d format, version 1.0.0.
type hooksD struct {
	Version string `json:"version"`
	Hook    struct {
		Path    string   `json:"path"`
		Args    []string `json:"args"`
		Env     []string `json:"env"`
		Timeout *int     `json:"timeout"`
	} `json:"hook"`
	When struct {
		Always *bool `json:"always"`
	} `json:"when"`
	Stages []string `json:"stages"`
}

// TestHooksDJSON checks etc/hooks.d/hotgpu.json against the format and
// against this command: the args it gives must parse, and its stages must be
// the ones prestart acts on.
func TestHooksDJSON(t *testing.T) {
	data, err := os.ReadFile("../../etc/hooks.d/hotgpu.json")
	if err != nil {
		t.Fatal(err)
	}
	var h hooksD
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("etc/hooks.d/hotgpu.json: %v", err)
	}
	if h.Version != "1.0.0" || h.Hook.Path != "/usr/local/bin/hotgpu-hook" || h.When.Always == nil || !*h.When.Always {
		t.Errorf("hooks.d = %+v", h)
	}
	if !slices.Equal(h.Stages, []string{"prestart", "poststop"}) {
		t.Errorf("stages = %v, want prestart (grant) and poststop (release)", h.Stages)
	}
	if !slices.Equal(h.Hook.Env, hookenv.Env) {
		t.Errorf("env = %q, want exactly %q (else the hook re-executes itself to get it)", h.Hook.Env, hookenv.Env)
	}
	if h.Hook.Timeout == nil || *h.Hook.Timeout <= 0 {
		t.Error("want a timeout: a hung hook blocks container creation")
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), append(slices.Clone(h.Hook.Args[1:]), "--help"), nil, &out, &errOut); code != 0 {
		t.Errorf("hotgpu-hook %v --help exited %d: %s", h.Hook.Args[1:], code, errOut.String())
	}
}

func TestInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "opt", "hotgpu", "bin")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"install", "--dir", dir}, nil, &out, &errOut); code != 0 {
		t.Fatalf("install exited %d: %s", code, errOut.String())
	}
	fi, err := os.Stat(filepath.Join(dir, "hotgpu-hook"))
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Size() == 0 {
		t.Fatalf("installed binary: %v %v", fi, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if code := run(context.Background(), []string{"install", "--dir", "relative"}, nil, &out, &errOut); code != 2 {
		t.Errorf("relative --dir exited %d, want 2", code)
	}
}

func TestPrestartUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"prestart", "--bogus"}, nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "prestart --help") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"prestart", "--standalone", "--api-socket", ""}, strings.NewReader("nope"), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "container runtime") {
		t.Errorf("garbage state: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"prestart", "--api-socket", ""}, strings.NewReader("nope"), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--standalone") {
		t.Errorf("no socket and not standalone: exit %d, stderr %q; want a usage error naming --standalone", code, errOut.String())
	}
}
