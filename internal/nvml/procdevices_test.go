package nvml

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// TestRealModeLoadsUVM: a missing nvidia-uvm is loaded with
// nvidia-modprobe when it is installed; otherwise the inventory still comes,
// without the uvm nodes, and says what is missing and how to fix it.
func TestRealModeLoadsUVM(t *testing.T) {
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	tests := []struct {
		name     string
		file     string
		modprobe string // script body; "" for none installed
		wantUVM  int64
		problem  string
	}{
		{"uvm loaded", "testdata/proc-devices", "", 509, ""},
		{"uvm missing, nvidia-modprobe loads it", "testdata/proc-devices-no-uvm",
			// shell builtins only: PATH is empty of tools
			`[ "$1 $2" = "-u -c=0" ] || exit 2; while IFS= read -r l; do printf '%s\n' "$l"; done <` + abs("testdata/proc-devices") + ` >"$PROC_DEVICES"`, 509, ""},
		{"uvm missing, nvidia-modprobe fails", "testdata/proc-devices-no-uvm", "echo no such module >&2; exit 1", 0, "no such module"},
		{"uvm missing, no nvidia-modprobe", "testdata/proc-devices-no-uvm", "", 0, "nvidia-modprobe -u -c=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("PATH", dir) // no host nvidia-modprobe
			procDevices := filepath.Join(dir, "devices")
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(procDevices, data, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PROC_DEVICES", procDevices)
			p := &Provider{opts: defaultOptions()} // real mode: no simulation
			p.opts.procDevices, p.opts.driverRoot, p.opts.devRoot = procDevices, dir, dir
			if tt.modprobe != "" {
				script := filepath.Join(dir, "usr/bin/nvidia-modprobe")
				if err := os.MkdirAll(filepath.Dir(script), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(script, []byte("#!/bin/sh\n"+tt.modprobe+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			m, err := p.majors()
			if err != nil {
				t.Fatal(err)
			}
			problem := p.uvmProblem(m)
			if m.uvm != tt.wantUVM || (tt.problem == "") != (problem == "") || !strings.Contains(problem, tt.problem) {
				t.Fatalf("uvm major %d, problem %q; want %d and %q", m.uvm, problem, tt.wantUVM, tt.problem)
			}
			if n := len(p.controlNodes(m.uvm)); (m.uvm == 0 && n != 1) || (m.uvm != 0 && n != 3) {
				t.Errorf("%d control nodes with uvm major %d", n, m.uvm)
			}
		})
	}
	p := &Provider{opts: defaultOptions()}
	p.opts.procDevices = "testdata/absent"
	if _, err := p.majors(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing /proc/devices: %v", err)
	}
}

// TestModesetWhenPresent: /dev/nvidia-modeset is a control node only where
// the dev root has it.
func TestModesetWhenPresent(t *testing.T) {
	root := t.TempDir()
	p := newSimProvider(t, "dgxa100")
	p.opts.devRoot = root
	if n := len(inventory(t, p).Control); n != 3 {
		t.Fatalf("%d control nodes without nvidia-modeset, want 3", n)
	}
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dev/nvidia-modeset"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctl := inventory(t, p).Control
	if want := (gpu.DeviceNode{Path: "/dev/nvidia-modeset", Major: 195, Minor: 254}); len(ctl) != 4 || ctl[3] != want {
		t.Fatalf("control nodes = %v, want nvidia-modeset last", ctl)
	}
}
