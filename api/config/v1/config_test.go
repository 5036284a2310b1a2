package v1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "minimal file keeps defaults",
			doc:  "version: v1\n",
			check: func(t *testing.T, c *Config) {
				if c.StateDir != "/var/lib/hotgpu" || c.NRI.Socket != "/var/run/nri/nri.sock" || c.DevicePlugin.PodResourcesInterval.Duration != 2*time.Second {
					t.Errorf("defaults lost: %+v", c)
				}
				if len(c.Annotations.Namespaces) != 0 {
					t.Errorf("annotations must be honoured in no namespace by default, got %v", c.Annotations.Namespaces)
				}
			},
		},
		{
			name: "values override defaults",
			doc: "version: v1\nsimulate: pcie8\nannotations:\n  namespaces: [ml, research]\n  maxPerContainer: 4\n" +
				"reconcileInterval: 5s\ncdi:\n  dir: /etc/cdi\n",
			check: func(t *testing.T, c *Config) {
				if c.Simulate != "pcie8" || c.Annotations.MaxPerContainer != 4 || c.CDI.Dir != "/etc/cdi" {
					t.Errorf("values not read: %+v", c)
				}
				if got := strings.Join(c.Annotations.Namespaces, ","); got != "ml,research" {
					t.Errorf("namespaces = %q", got)
				}
				if c.ReconcileInterval.Duration != 5*time.Second {
					t.Errorf("reconcileInterval = %v", c.ReconcileInterval)
				}
				if c.CDI.Vendor != "nvidia.com" {
					t.Errorf("unset nested key lost its default: %q", c.CDI.Vendor)
				}
			},
		},
		{name: "missing version", doc: "stateDir: /x\n", wantErr: `unsupported version ""`},
		{name: "future version", doc: "version: v2\n", wantErr: `unsupported version "v2"`},
		{name: "unknown key", doc: "version: v1\nannotation:\n  namespaces: [x]\n", wantErr: "unknown field"},
		{name: "relative path", doc: "version: v1\nstateDir: state\n", wantErr: "stateDir must be an absolute path"},
		{name: "bad namespace", doc: "version: v1\nannotations:\n  namespaces: [\"Bad_NS\"]\n", wantErr: `"Bad_NS" is not a Kubernetes namespace`},
		{name: "bad duration", doc: "version: v1\nreconcileInterval: 10\n", wantErr: "duration must be a string"},
		{name: "too short interval", doc: "version: v1\nreconcileInterval: 1ms\n", wantErr: "at least 1s"},
		{name: "too short PodResources interval", doc: "version: v1\ndevicePlugin:\n  podResourcesInterval: 1ms\n", wantErr: "podResourcesInterval must be at least 100ms"},
		{name: "not yaml", doc: "version: [v1\n", wantErr: "not valid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hotgpud.yaml")
	if err := os.WriteFile(p, []byte("version: v9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v should name the file", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("version: v1\n"))
	f.Add([]byte("version: v1\nannotations:\n  namespaces: [a]\n  maxPerContainer: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
	})
}
