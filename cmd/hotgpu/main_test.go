package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runCLI runs one command line in-process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
	return code, out.String(), errOut.String()
}

func TestExitCodesAndHelp(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string
		stderrHead bool // stderr must start with "hotgpu: "
	}{
		{name: "no command", args: nil, code: 2, stderr: "Commands:"},
		{name: "help", args: []string{"--help"}, code: 0, stdout: "cdi"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "cdi without command", args: []string{"cdi"}, code: 2, stderr: "generate"},
		{name: "cdi help", args: []string{"cdi", "help"}, code: 0, stdout: "list"},
		{name: "generate help", args: []string{"cdi", "generate", "--help"}, code: 0, stdout: "Examples:"},
		{name: "list help", args: []string{"cdi", "list", "-h"}, code: 0, stdout: "--simulate pcie8"},
		{name: "unknown flag", args: []string{"cdi", "generate", "--bogus"}, code: 2, stderr: "hotgpu: flag provided but not defined", stderrHead: true},
		{name: "positional argument", args: []string{"cdi", "list", "extra"}, code: 2, stderr: `unexpected argument "extra"`, stderrHead: true},
		{name: "bad format", args: []string{"cdi", "generate", "--simulate", "dgxa100", "--format", "toml"}, code: 2, stderr: "yaml or json", stderrHead: true},
		{name: "format mismatch", args: []string{"cdi", "generate", "--simulate", "dgxa100", "--format", "json", "--output", "/tmp/x.yaml"}, code: 2, stderr: "does not match", stderrHead: true},
		{name: "unknown preset", args: []string{"cdi", "list", "--simulate", "dgx9"}, code: 1, stderr: "dgxa100", stderrHead: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stdout %q / stderr %q, want %q / %q", stdout, stderr, tt.stdout, tt.stderr)
			}
			if tt.stderrHead && !strings.HasPrefix(stderr, "hotgpu: ") {
				t.Errorf("stderr %q does not start with 'hotgpu: '", stderr)
			}
		})
	}
}

func TestMissingNVMLExplainsSimulate(t *testing.T) {
	root := t.TempDir()
	code, _, stderr := runCLI("cdi", "generate", "--driver-root", root)
	if code != 1 || !strings.HasPrefix(stderr, "hotgpu: ") || !strings.Contains(stderr, root) || !strings.Contains(stderr, "--simulate dgxa100") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
