package nvml

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

func TestParseProcDevices(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]int64
		wantErr bool
	}{
		{
			name: "driver loaded",
			in:   "Character devices:\n  1 mem\n195 nvidia-frontend\n236 nvidia-caps\n509 nvidia-uvm\n\nBlock devices:\n  7 loop\n",
			want: map[string]int64{"mem": 1, "nvidia-frontend": 195, "nvidia-caps": 236, "nvidia-uvm": 509},
		},
		{
			name: "block devices ignored",
			in:   "Character devices:\n  1 mem\nBlock devices:\n 42 nvidia-uvm\n",
			want: map[string]int64{"mem": 1},
		},
		{
			name: "first entry wins",
			in:   "Character devices:\n195 nvidia\n196 nvidia\n",
			want: map[string]int64{"nvidia": 195},
		},
		{name: "empty", in: "", want: map[string]int64{}},
		{name: "bad major", in: "Character devices:\nxx nvidia\n", wantErr: true},
		{name: "bad line", in: "Character devices:\n195\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcDevices(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

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
